/** `pneumolens info`: the model card in words. */
import { describeCard } from '../eval/card.ts';
import { command, ENGINE_HELP, engineOptions, flag } from './args.ts';
import { withEngine } from './engine.ts';
import { EXIT_OK, UsageError, type Io } from './io.ts';
import { siteText } from './site.ts';

export const help = `Usage: pneumolens info [options]

Describes the model: name, version, who it is validated for (first, from the card), architecture, size, input and preprocessing, threshold and
how it was chosen, calibration, validation metrics and, as prominently, what the card says about
other hospitals' images (results by source, independent grading), intended use and limitations.

Options:
  --json             print the model card JSON instead
${ENGINE_HELP}
  -h, --help         this help
`;

export function cardText(rows: Array<[string, string]>): string {
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n') + '\n\nResearch and education tool, not a medical device.\n';
}

export async function run(args: string[], io: Io): Promise<number> {
  const p = command(args, io, help, { engine: true, boolean: ['json'] });
  if (!p) return EXIT_OK;
  if (p.positionals.length > 0) throw new UsageError(`info takes no arguments, got '${p.positionals[0]}'`);
  return withEngine(io, engineOptions(p), async (engine) => {
    const { path: _path, ...profile } = engine.profile ?? { path: '' };
    if (flag(p, 'json')) io.stdout.write(JSON.stringify(engine.profile ? { ...engine.card, site: profile } : engine.card, null, 2) + '\n');
    else {
      io.stdout.write(cardText(describeCard(engine.card)));
      // With --site (or $PNEUMOLENS_SITE): the profile the answers are decided with.
      if (engine.profile)
        io.stdout.write(
          `\nSite profile (${engine.profile.path}): replaces the card's calibration, threshold and scope\n${siteText(engine.profile)}`,
        );
    }
    return EXIT_OK;
  });
}
