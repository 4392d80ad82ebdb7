/** Command-line parsing on node:util parseArgs, with typed number/choice checks that raise UsageError. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError, type Io } from './io.ts';

type Options = NonNullable<ParseArgsConfig['options']>;

export interface Parsed {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

export function parse(args: string[], options: Options): Parsed {
  try {
    const { values, positionals } = parseArgs({
      args,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
      strict: true,
    });
    return { values: values as Parsed['values'], positionals };
  } catch (e) {
    // parseArgs errors read like "Unknown option '--x'. To specify a positional argument starting with a '-' ..."
    const msg = e instanceof Error ? e.message.split('. To specify')[0] : String(e);
    throw new UsageError(msg);
  }
}

export function str(p: Parsed, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === 'string' ? v : undefined;
}

export function flag(p: Parsed, name: string): boolean {
  return p.values[name] === true;
}

/** A number option within [min, max]; `integer` demands a whole number. */
export function num(p: Parsed, name: string, min: number, max: number, integer = false): number | undefined {
  const raw = str(p, name);
  if (raw === undefined) return undefined;
  const v = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
    throw new UsageError(`--${name} must be ${integer ? 'an integer' : 'a number'} in [${min}, ${max}], got '${raw}'`);
  }
  return v;
}

export function choice<T extends string>(p: Parsed, name: string, choices: readonly T[]): T | undefined {
  const raw = str(p, name);
  if (raw === undefined) return undefined;
  if (!(choices as readonly string[]).includes(raw)) throw new UsageError(`--${name} must be one of ${choices.join(', ')}, got '${raw}'`);
  return raw as T;
}

/** Options every engine-using command accepts. */
const ENGINE_OPTIONS = {
  model: { type: 'string' },
  site: { type: 'string' },
  threads: { type: 'string' },
} as const satisfies Options;

export const ENGINE_HELP = `  --model CARD       model card JSON to use (default: $PNEUMOLENS_MODEL, else models/MODEL)
  --site PROFILE     decide with a site profile (pneumolens site): its calibration, threshold and
                     scope replace the card's (default: $PNEUMOLENS_SITE, else none)
  --threads N        ONNX Runtime intra-op threads`;

export function engineOptions(p: Parsed): { card?: string; threads?: number; site?: string } {
  const card = str(p, 'model');
  const site = str(p, 'site');
  if (site === '') throw new UsageError('--site needs a profile file (made by pneumolens site)');
  const threads = num(p, 'threads', 1, 256, true);
  return {
    ...(card !== undefined ? { card } : {}),
    ...(site !== undefined ? { site } : {}),
    ...(threads !== undefined ? { threads } : {}),
  };
}

/** A command's options by name: `string` ones take a value (--name VALUE), `boolean` ones are switches. */
export interface CommandOptions {
  /** also --model, --site and --threads (ENGINE_OPTIONS) */
  engine?: boolean;
  string?: readonly string[];
  boolean?: readonly string[];
}

/**
 * Parses a command's arguments against its options (and --help) once, at the command's edge.
 * After --help it prints `help` and gives undefined: the command then returns EXIT_OK.
 */
export function command(args: string[], io: Io, help: string, options: CommandOptions): Parsed | undefined {
  const p = parse(args, {
    ...(options.engine ? ENGINE_OPTIONS : {}),
    ...Object.fromEntries((options.string ?? []).map((name) => [name, { type: 'string' } as const])),
    ...Object.fromEntries((options.boolean ?? []).map((name) => [name, { type: 'boolean' } as const])),
  });
  if (!flag(p, 'help')) return p;
  io.stdout.write(help);
  return undefined;
}
