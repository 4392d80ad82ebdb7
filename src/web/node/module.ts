/** Browser stand-in for node:module (see README.md): `createRequire(...)('dicom-parser')` is the bundled dicom-parser. */
import * as dicomParser from 'dicom-parser';

export function createRequire(_from: string | URL): (id: string) => unknown {
  return (id) => {
    if (id === 'dicom-parser') return dicomParser;
    throw new Error(`require('${id}') is not available in the browser build`);
  };
}
