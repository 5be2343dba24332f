/**
 * One bounded wait: settles as `work` does unless `ms` pass first, then rejects with the error
 * `onTimeout()` builds (it may also clean up, e.g. destroy a socket). The timer never outlives the race.
 */
export async function withDeadline<T>(work: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}
