// dependency-cruiser: the import graph's rules (`npm run lint`; docs/layers.md explains the layers).
//
// Layers, top to bottom; a module imports only from its own layer or the ones below it:
//   1. front ends   src/cli, src/server, src/pacs, src/web (the browser engine), web/ (the page)
//   2. pipeline     src/pipeline.ts: the engine that runs the stages over a batch, and src/types.ts: its
//                   options and results (AnalyseOptions, AnalysisResult, Outcome), made of the stages' types
//   3. stages       src/site > src/eval > src/gate > src/model, src/explain > src/image
//                   (an upper stage may use a lower one; src/model and src/explain are peers)
//   4. foundation   src/errors.ts: the one error table; imports nothing from src
// Type-only imports count (tsPreCompilationDeps), and so do the JSDoc `import('…')` types of web/.
// test/, bench/ and scripts/ may import anything; nothing in src or web/ imports them.

/** Regular expressions of the layers' paths. */
const FRONT_ENDS = '^(src/(cli|server|pacs|web)/|web/)';
const PIPELINE = '^src/(pipeline|types)\\.ts$';
const STAGES = '^src/(site|eval|gate|model|explain|image)/';
const FOUNDATION = '^src/errors\\.ts$';

/** Each stage and the stages above it, which it must not import. */
const STAGES_ABOVE = {
  image: ['site', 'eval', 'gate', 'model', 'explain'],
  model: ['site', 'eval', 'gate', 'explain'],
  explain: ['site', 'eval', 'gate', 'model'],
  gate: ['site', 'eval'],
  eval: ['site'],
};

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'No cycles: a cycle ties its modules into one, whatever layers they claim to be in.',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'foundation-imports-nothing',
      comment: 'src/errors.ts is the bottom layer: it imports nothing from src.',
      severity: 'error',
      from: { path: FOUNDATION },
      to: { path: '^(src|web)/', pathNot: FOUNDATION },
    },
    {
      name: 'stages-not-up-to-pipeline-or-front-ends',
      comment: 'A stage (image, model, explain, gate, eval, site) knows neither the pipeline (nor its result types) nor any front end.',
      severity: 'error',
      from: { path: STAGES },
      to: { path: [PIPELINE, FRONT_ENDS] },
    },
    ...Object.entries(STAGES_ABOVE).map(([stage, above]) => ({
      name: `${stage}-not-up-to-higher-stages`,
      comment: `src/${stage} imports only the stages below it (order: site > eval > gate > model, explain > image).`,
      severity: 'error',
      from: { path: `^src/${stage}/` },
      to: { path: `^src/(${above.join('|')})/` },
    })),
    {
      name: 'pipeline-not-up-to-front-ends',
      comment: 'The pipeline is driven by the front ends; it never imports one.',
      severity: 'error',
      from: { path: PIPELINE },
      to: { path: FRONT_ENDS },
    },
    {
      name: 'front-ends-apart',
      comment:
        'The server, the PACS watcher and the browser engine do not import each other: what two of them share ' +
        'belongs in the pipeline or a stage. Only the CLI, which starts them all, imports them.',
      severity: 'error',
      from: { path: '^src/(server|pacs|web)/' },
      to: { path: '^src/(cli|server|pacs|web)/', pathNot: '^src/$1/' },
    },
    {
      name: 'page-uses-only-api-types',
      comment:
        'The web page (web/) runs in the browser: from src it takes only the HTTP API types (src/server/openapi.ts, ' +
        'src/server/errors.ts, src/types.ts) and the browser engine (src/web), never server or Node code.',
      severity: 'error',
      from: { path: '^web/' },
      to: { path: '^src/', pathNot: ['^src/server/(openapi|errors)\\.ts$', '^src/types\\.ts$', '^src/web/'] },
    },
    {
      name: 'src-not-to-tests-or-tools',
      comment: 'Shipped code never imports the tests, the benchmarks or the build scripts.',
      severity: 'error',
      from: { path: '^(src|web)/' },
      to: { path: '^(test|bench|scripts)/' },
    },
    {
      name: 'no-orphans',
      comment:
        'A module of src that nothing imports is dead code. The worker entry points (*.mjs, started by path) and ' +
        'the browser runtime that scripts/build-web.ts swaps in are reached without an import.',
      severity: 'error',
      from: {
        orphan: true,
        path: '^src/',
        pathNot: ['\\.mjs$', '\\.d\\.ts$', '^src/model/runtime\\.web\\.ts$', '^src/web/node/', '\\.md$'],
      },
      to: {},
    },
    {
      name: 'not-to-unresolvable',
      comment: 'An import that resolves to nothing fails at run time.',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
    {
      name: 'not-to-dev-dep',
      comment:
        'The container installs only dependencies (npm ci --omit=dev): server and CLI code must not import a ' +
        'devDependency. src/web is bundled for the browser by esbuild and may.',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/web/' },
      to: { dependencyTypes: ['npm-dev'], dependencyTypesNot: ['type-only'], pathNot: ['node_modules/@types/'] },
    },
    {
      name: 'no-non-package-json',
      comment: 'Every package imported is named in package.json (not just present in node_modules by chance).',
      severity: 'error',
      from: {},
      to: { dependencyTypes: ['npm-no-pkg', 'npm-unknown'] },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: ['^test/fixtures/golden/', '^node_modules/'] },
    tsPreCompilationDeps: true,
    detectJSDocImports: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      extensions: ['.ts', '.d.ts', '.js', '.mjs', '.cjs', '.json'],
      mainFields: ['module', 'main', 'types', 'typings'],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
