/** Browser stand-in for node:path (see README.md): POSIX paths, enough for card.ts's module-level constants. */
export const isAbsolute = (p: string): boolean => p.startsWith('/');

export function resolve(...parts: string[]): string {
  const out: string[] = [];
  for (const part of parts) {
    if (isAbsolute(part)) out.length = 0;
    for (const seg of part.split('/')) {
      if (seg === '..') out.pop();
      else if (seg && seg !== '.') out.push(seg);
    }
  }
  return `/${out.join('/')}`;
}

export const dirname = (p: string): string => resolve(p, '..');
