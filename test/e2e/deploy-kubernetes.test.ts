/**
 * deploy/kubernetes/ (issue 22 item 2). No cluster is reachable here, so:
 * 1. every manifest is validated against the OpenAPI schemas of Kubernetes v1.36 as compiled by
 *    the npm package kubernetes-models 5.x (its changelog: "Update to Kubernetes v1.36.0"), plus a
 *    known-field check on the objects where a typo would silently do nothing (those schemas, like
 *    the API server, allow unknown fields): the field names come from the same package's types;
 * 2. the manifests say what the README promises (probes on /api/health, non-root, read-only root
 *    filesystem, PNEUMOLENS_MAX_CONCURRENT = CPU limit, HPA autoscaling/v2 on the Deployment, a PDB,
 *    an Indexed Job whose JOB_COMPLETIONS is its completions);
 * 3. the Job's command is run as the image runs it (the Dockerfile's WORKDIR is this repository's
 *    root, its CMD starts with the same `node --import tsx src/cli/main.ts`), once per index, over a
 *    folder of films: the shards' JSON files are disjoint, non-empty and cover every film.
 */
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { Deployment } from 'kubernetes-models/apps/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { Job } from 'kubernetes-models/batch/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { Service } from 'kubernetes-models/v1';
import { writeTinyModel } from '../fixtures/make-onnx.ts';
import { constantPng, texturedGrayPng } from '../fixtures/non-cxr.ts';
import { REPO as ROOT, testTmp } from '../fixtures/paths.ts';

const DIR = join(ROOT, 'deploy/kubernetes');
const MODELS = { Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget, Job } as const;
type Kind = keyof typeof MODELS;

const docs: Array<{ file: string; kind: Kind; obj: any; errors: string[] }> = [];
for (const file of readdirSync(DIR).filter((f) => f.endsWith('.yaml'))) {
  for (const d of parseAllDocuments(readFileSync(join(DIR, file), 'utf8'))) {
    const obj = d.toJS();
    docs.push({ file, kind: obj?.kind, obj, errors: d.errors.map((e) => e.message) });
  }
}
const one = (kind: Kind) => {
  const found = docs.filter((d) => d.kind === kind);
  expect(found, kind).toHaveLength(1);
  return found[0].obj;
};

/** The property names of an interface of kubernetes-models' types (the OpenAPI properties). */
const require = createRequire(import.meta.url);
function fieldsOf(dts: string, iface: string): Set<string> {
  const text = readFileSync(join(require.resolve('kubernetes-models/package.json'), '..', dts), 'utf8');
  const start = text.indexOf(`export interface ${iface} {`);
  expect(start, `${iface} in ${dts}`).toBeGreaterThanOrEqual(0);
  const body = text.slice(start, text.indexOf('\n}', start));
  return new Set([...body.matchAll(/^ {4}"([A-Za-z0-9]+)"\??:/gm)].map((m) => m[1]));
}
const KNOWN = {
  podSpec: fieldsOf('v1/PodSpec.d.ts', 'IPodSpec'),
  container: fieldsOf('v1/Container.d.ts', 'IContainer'),
  probe: fieldsOf('v1/Probe.d.ts', 'IProbe'),
  securityContext: fieldsOf('v1/SecurityContext.d.ts', 'ISecurityContext'),
  podSecurityContext: fieldsOf('v1/PodSecurityContext.d.ts', 'IPodSecurityContext'),
  resources: fieldsOf('v1/ResourceRequirements.d.ts', 'IResourceRequirements'),
  volume: fieldsOf('v1/Volume.d.ts', 'IVolume'),
  volumeMount: fieldsOf('v1/VolumeMount.d.ts', 'IVolumeMount'),
  envVar: fieldsOf('v1/EnvVar.d.ts', 'IEnvVar'),
  deploymentSpec: fieldsOf('apps/v1/DeploymentSpec.d.ts', 'IDeploymentSpec'),
  jobSpec: fieldsOf('batch/v1/JobSpec.d.ts', 'IJobSpec'),
  hpaSpec: fieldsOf('autoscaling/v2/HorizontalPodAutoscalerSpec.d.ts', 'IHorizontalPodAutoscalerSpec'),
  pdbSpec: fieldsOf('policy/v1/PodDisruptionBudgetSpec.d.ts', 'IPodDisruptionBudgetSpec'),
  serviceSpec: fieldsOf('v1/ServiceSpec.d.ts', 'IServiceSpec'),
};

/** Field names of obj that the type does not have. */
function unknownFields(obj: Record<string, unknown> | undefined, known: Set<string>, where: string): string[] {
  return obj
    ? Object.keys(obj)
        .filter((k) => !known.has(k))
        .map((k) => `${where}.${k}`)
    : [];
}

function podUnknowns(pod: any, where: string): string[] {
  const out = [
    ...unknownFields(pod, KNOWN.podSpec, where),
    ...unknownFields(pod.securityContext, KNOWN.podSecurityContext, `${where}.securityContext`),
  ];
  for (const v of pod.volumes ?? []) out.push(...unknownFields(v, KNOWN.volume, `${where}.volumes[${v.name}]`));
  for (const c of pod.containers ?? []) {
    const at = `${where}.containers[${c.name}]`;
    out.push(...unknownFields(c, KNOWN.container, at), ...unknownFields(c.securityContext, KNOWN.securityContext, `${at}.securityContext`));
    out.push(...unknownFields(c.resources, KNOWN.resources, `${at}.resources`));
    for (const p of ['startupProbe', 'readinessProbe', 'livenessProbe']) out.push(...unknownFields(c[p], KNOWN.probe, `${at}.${p}`));
    for (const m of c.volumeMounts ?? []) out.push(...unknownFields(m, KNOWN.volumeMount, `${at}.volumeMounts[${m.name}]`));
    for (const e of c.env ?? []) out.push(...unknownFields(e, KNOWN.envVar, `${at}.env[${e.name}]`));
  }
  return out;
}

describe('deploy/kubernetes: schema validation (Kubernetes v1.36 OpenAPI, kubernetes-models)', () => {
  it('every YAML file of the folder parses: one object of each kind', () => {
    expect(docs.flatMap((d) => d.errors)).toEqual([]);
    expect(docs.map((d) => d.kind).sort()).toEqual(['Deployment', 'HorizontalPodAutoscaler', 'Job', 'PodDisruptionBudget', 'Service']);
  });

  it.each(['Deployment', 'Service', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'Job'] as const)('%s is valid', (kind) => {
    const obj = one(kind);
    const Model = MODELS[kind] as unknown as { apiVersion: string; new (o: unknown): { validate(): void } };
    expect(obj.apiVersion).toBe(Model.apiVersion);
    expect(() => new Model(obj).validate()).not.toThrow();
  });

  it('the validator is not a no-op: wrong types and missing required fields are refused', () => {
    const d = structuredClone(one('Deployment'));
    d.spec.replicas = 'two';
    expect(() => new Deployment(d).validate()).toThrow(/replicas must be integer/);
    const j = structuredClone(one('Job'));
    delete j.spec.template.spec.containers[0].name;
    expect(() => new Job(j).validate()).toThrow(/name/);
    const h = structuredClone(one('HorizontalPodAutoscaler'));
    delete h.spec.scaleTargetRef;
    expect(() => new HorizontalPodAutoscaler(h).validate()).toThrow(/scaleTargetRef/);
  });

  it('no field name that Kubernetes does not know (a typo would be ignored by the API server)', () => {
    const dep = one('Deployment');
    const job = one('Job');
    const unknown = [
      ...unknownFields(dep.spec, KNOWN.deploymentSpec, 'Deployment.spec'),
      ...podUnknowns(dep.spec.template.spec, 'Deployment.pod'),
      ...unknownFields(job.spec, KNOWN.jobSpec, 'Job.spec'),
      ...podUnknowns(job.spec.template.spec, 'Job.pod'),
      ...unknownFields(one('HorizontalPodAutoscaler').spec, KNOWN.hpaSpec, 'HPA.spec'),
      ...unknownFields(one('PodDisruptionBudget').spec, KNOWN.pdbSpec, 'PDB.spec'),
      ...unknownFields(one('Service').spec, KNOWN.serviceSpec, 'Service.spec'),
    ];
    expect(unknown).toEqual([]);
    // and the check itself catches one
    expect(podUnknowns({ containers: [{ name: 'x', readinesProbe: {} }] }, 'p')).toEqual(['p.containers[x].readinesProbe']);
  });
});

describe('deploy/kubernetes: what the README promises', () => {
  const cpuOf = (q: string) => (q.endsWith('m') ? Number(q.slice(0, -1)) / 1000 : Number(q));
  const env = (c: any, name: string) => c.env.find((e: any) => e.name === name)?.value;

  it('Deployment: probes on /api/health, non-root, read-only root filesystem, MAX_CONCURRENT = CPU limit', () => {
    const dep = one('Deployment');
    const pod = dep.spec.template.spec;
    const [c] = pod.containers;
    for (const p of ['startupProbe', 'readinessProbe', 'livenessProbe'])
      expect(c[p].httpGet).toMatchObject({ path: '/api/health', port: 'http' });
    expect(c.ports).toEqual([expect.objectContaining({ name: 'http', containerPort: Number(env(c, 'PORT')) })]);
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000 });
    expect(c.securityContext).toMatchObject({
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
    });
    expect(c.volumeMounts).toEqual([expect.objectContaining({ mountPath: '/tmp' })]); // the only writable path
    expect(Number(env(c, 'PNEUMOLENS_MAX_CONCURRENT'))).toBe(cpuOf(c.resources.limits.cpu));
    expect(c.resources).toMatchObject({ requests: { memory: '512Mi' }, limits: { memory: '1Gi' } });
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(30); // the server forces its exit after 30 s
  });

  it('Service, HPA and PDB select the Deployment', () => {
    const dep = one('Deployment');
    const labels = dep.spec.template.metadata.labels;
    expect(dep.spec.selector.matchLabels).toEqual(labels);
    expect(one('Service').spec.selector).toEqual(labels);
    expect(one('Service').spec.ports[0].targetPort).toBe('http');
    expect(one('PodDisruptionBudget').spec.selector.matchLabels).toEqual(labels);
    const hpa = one('HorizontalPodAutoscaler');
    expect(hpa.apiVersion).toBe('autoscaling/v2');
    expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: dep.metadata.name });
    expect(hpa.spec.minReplicas).toBeGreaterThan(one('PodDisruptionBudget').spec.minAvailable);
  });

  it('Job: Indexed, JOB_COMPLETIONS = completions, --threads = CPU limit, non-root, read-only root filesystem', () => {
    const job = one('Job');
    const pod = job.spec.template.spec;
    const [c] = pod.containers;
    expect(job.spec.completionMode).toBe('Indexed');
    expect(Number(env(c, 'JOB_COMPLETIONS'))).toBe(job.spec.completions);
    expect(job.spec.parallelism).toBeLessThanOrEqual(job.spec.completions);
    expect(pod.restartPolicy).toBe('Never');
    expect(c.args[0]).toMatch(new RegExp(`--threads ${cpuOf(c.resources.limits.cpu)} `));
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000 });
    expect(c.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });
    const mounts = Object.fromEntries(c.volumeMounts.map((m: any) => [m.mountPath, m]));
    expect(mounts[env(c, 'INPUT_DIR')]).toMatchObject({ readOnly: true });
    expect(mounts[env(c, 'RESULTS_DIR')]).toBeDefined();
    expect(mounts['/tmp']).toBeDefined();
  });

  it('the image runs the CLI the way the Job calls it (Dockerfile WORKDIR, USER, CMD)', () => {
    const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
    const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
    expect(runtime).toMatch(/^WORKDIR \/app$/m);
    expect(runtime).toMatch(/^USER node$/m);
    expect(runtime).toMatch(/^COPY src \.\/src$/m);
    const cmd = JSON.parse(/^CMD (\[.*\])$/m.exec(runtime)![1]) as string[];
    expect(cmd.slice(0, 4)).toEqual(['node', '--import', 'tsx', 'src/cli/main.ts']);
    expect(one('Job').spec.template.spec.containers[0].args[0]).toContain(`${cmd.slice(0, 4).join(' ')} predict --json`);
    // the Job's shell exists in the image's base (Debian slim) and here
    expect(one('Job').spec.template.spec.containers[0].command).toEqual(['/bin/sh', '-c']);
  });
});

describe('deploy/kubernetes: the Job command over a folder, one run per index', () => {
  let tmp: string;
  let cardPath: string;
  const N = 3;
  beforeAll(async () => {
    tmp = await mkdtemp(join(testTmp(), 'pneumolens-job-'));
    await mkdir(join(tmp, 'data/2024/a'), { recursive: true });
    await mkdir(join(tmp, 'data/2025'), { recursive: true });
    await mkdir(join(tmp, 'results'));
    for (let i = 0; i < 10; i++)
      await writeFile(join(tmp, `data/${i % 2 ? '2024/a' : '2025'}/film${i}.png`), texturedGrayPng(40, 40 + i, 30 + i, 0, 200));
    await writeFile(join(tmp, 'data/2025/blank.png'), constantPng(40, 40, 90)); // declined: predict exits 1, the shard still succeeds
    cardPath = writeTinyModel({ size: 32, channels: 4, stride: 4 }).cardPath;
  });
  afterAll(() => rm(tmp, { recursive: true, force: true }));

  const runIndex = (index: number, over: Record<string, string> = {}) => {
    const c = one('Job').spec.template.spec.containers[0];
    const manifestEnv = Object.fromEntries(c.env.map((e: any) => [e.name, e.value]));
    return spawnSync(c.command[0], [...c.command.slice(1), ...c.args], {
      cwd: ROOT, // the image's WORKDIR /app holds this repository's files
      encoding: 'utf8',
      timeout: 60_000,
      env: {
        PATH: process.env.PATH,
        HOME: tmp,
        ...manifestEnv,
        JOB_COMPLETIONS: String(N),
        JOB_COMPLETION_INDEX: String(index), // set by Kubernetes in an Indexed Job
        INPUT_DIR: join(tmp, 'data'),
        RESULTS_DIR: join(tmp, 'results'),
        PNEUMOLENS_MODEL: cardPath,
        ...over,
      },
    });
  };

  it('writes shard-K-of-N.json for each index: disjoint, non-empty, covering every film', async () => {
    for (let k = 0; k < N; k++) {
      const r = runIndex(k);
      expect(r.status, r.stderr).toBe(0);
    }
    const files = (await readdir(join(tmp, 'results'))).sort();
    expect(files).toEqual([
      'shard-0-of-3.json',
      'shard-0-of-3.log',
      'shard-1-of-3.json',
      'shard-1-of-3.log',
      'shard-2-of-3.json',
      'shard-2-of-3.log',
    ]);
    const seen: string[] = [];
    for (let k = 0; k < N; k++) {
      const json = JSON.parse(await readFile(join(tmp, 'results', `shard-${k}-of-3.json`), 'utf8'));
      expect(json.shard).toMatchObject({ index: k, count: N, of: 11 });
      expect(json.results.length).toBeGreaterThan(0);
      seen.push(...json.results.map((r: { file: string }) => r.file));
    }
    expect(seen).toHaveLength(11);
    expect(new Set(seen).size).toBe(11);
    expect(seen.some((f) => f.endsWith('blank.png'))).toBe(true);
  });

  it('a shard that cannot run fails its index and leaves no result file', async () => {
    const r = runIndex(0, { INPUT_DIR: join(tmp, 'no-such-folder'), RESULTS_DIR: join(tmp, 'results') });
    expect(r.status).toBe(1);
    const again = runIndex(1, { JOB_COMPLETIONS: '' });
    expect(again.status).not.toBe(0); // set -u: the manifest's JOB_COMPLETIONS is required
    expect((await readdir(join(tmp, 'results'))).filter((f) => f.endsWith('.partial'))).toEqual([]);
  });
});
