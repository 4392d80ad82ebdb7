/** Browser stand-in for node:worker_threads (see README.md): the DICOM codec worker does not run on the device. */
import { notOnDevice } from '../canvas-io.ts';

export class Worker {
  constructor() {
    throw notOnDevice('A DICOM with compressed pixel data (JPEG, JPEG-LS, JPEG 2000 or RLE)');
  }
}

export const parentPort = null;
