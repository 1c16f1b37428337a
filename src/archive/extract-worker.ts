// Entry point of the layer extraction worker (see extract-remote.ts).
import { parentPort } from 'node:worker_threads';
import { serveExtraction } from './extract-remote.js';

serveExtraction(parentPort!);
