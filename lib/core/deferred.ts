// Whole passes off the JS thread (native/deferred.h): the synchronous op calls of `build` queue their
// CPU kernels instead of running them, and the queue runs on a libuv worker while the event loop goes
// on. Reading a value inside `build` is still correct (it runs the queue first), only not asynchronous.
// On CUDA nothing is queued: kernel launches are asynchronous already.
import { native } from '../backend';

export async function runDeferred<T>(build: () => T): Promise<T> {
  const n = native();
  n.deferBegin();
  let done: Promise<void>;
  let out: T;
  try {
    out = build();
  } catch (e) {
    done = n.deferEnd();
    await done.catch(() => undefined); // the error of build comes first
    throw e;
  }
  done = n.deferEnd();
  await done;
  return out;
}
