/** Browser stand-in for node:fs (see README.md): there is no file system; the page fetches what it needs. */
const none = (what: string): never => {
  throw new Error(`${what}: no file system in the browser (the page fetches the model card and model itself)`);
};

export const existsSync = (_path: string): boolean => false;
export const readFileSync = (path: string): never => none(`readFileSync(${path})`);
export const createReadStream = (path: string): never => none(`createReadStream(${path})`);
