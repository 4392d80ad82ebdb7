/** Injected by the browser build wherever the engine names the global `Buffer` (see README.md): the npm `buffer` package. */
export { Buffer } from 'buffer';
