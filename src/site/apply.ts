/**
 * Applying a site profile: the card the engine decides with. The profile's calibration and
 * threshold replace the card's `postprocessing` (the same form, applied by the same
 * model/postprocess.ts function), and, when the profile is validated and the model has an
 * intended-use head, its scope threshold replaces the head's. Without a profile the card is unchanged.
 */
import type { ModelCard } from '../model/card.ts';
import type { SiteProfile, SiteSummary } from './profile.ts';

export function applySite<C extends ModelCard>(card: C, profile: SiteProfile | undefined): C {
  if (!profile) return card;
  const c = profile.calibration;
  const postprocessing = { temperature: c.temperature, bias: c.bias, threshold: c.threshold, threshold_policy: `site:${c.policy}` };
  const head = card.gate?.intended_use;
  const scope = profile.scope;
  // A site that is not validated keeps the card's intended use: its films stay declined.
  const gate =
    card.gate && head && profile.validated && scope.rule === 'site_quantile'
      ? { ...card.gate, intended_use: { ...head, threshold: scope.threshold } }
      : card.gate;
  return { ...card, postprocessing, ...(gate ? { gate } : {}) };
}

/** The message of a film declined as outside the scope of a (validated) site profile. */
export function outsideSiteMessage(site: SiteSummary): string {
  return `This chest X-ray is unlike the films site profile "${site.name}" was validated on (and outside the population the model itself is validated for); on such films neither the model's nor the site's numbers apply.`;
}
