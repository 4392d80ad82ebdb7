/** Browser stand-in for node:crypto (see README.md): the page checks the model's SHA-256 with crypto.subtle (device.ts). */
export function createHash(_algorithm: string): never {
  throw new Error('createHash: not in the browser (the page checks the model hash with crypto.subtle)');
}
