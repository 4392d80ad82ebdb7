// Entry of an engine worker thread (src/server/engine-worker.ts): the TypeScript sources are loaded
// through tsx's loader, registered here because worker threads do not inherit the main thread's.
import { register } from 'tsx/esm/api';

register();
await import('./engine-thread-main.ts');
