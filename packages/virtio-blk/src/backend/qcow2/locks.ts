/**
 * The two locks of the qcow2 back-end: a mutex for metadata changes and a shared /
 * exclusive lock that lets FLUSH wait for every read and write in flight. Exclusive
 * waiters block new shared holders, so a FLUSH is never starved.
 *
 * @module
 */

/** A FIFO mutex over async tasks. */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();

  /** Runs `task` after every task queued before it has settled. */
  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task, task);
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}

/** A shared / exclusive lock with writer preference. */
export class SharedLock {
  private holders = 0; // > 0: shared holders; -1: exclusive
  private readonly waiting: Array<{ exclusive: boolean; wake: () => void }> = [];

  /** Takes the lock shared; `undefined` when it was free (no need to await). */
  shared(): Promise<void> | undefined {
    if (this.holders >= 0 && this.waiting.length === 0) {
      this.holders++;
      return undefined;
    }
    return new Promise((wake) => this.waiting.push({ exclusive: false, wake }));
  }

  /** Takes the lock shared if that needs no wait; whether it did. */
  tryShared(): boolean {
    if (this.holders < 0 || this.waiting.length > 0) return false;
    this.holders++;
    return true;
  }

  /** Takes the lock exclusively. */
  exclusive(): Promise<void> {
    if (this.holders === 0 && this.waiting.length === 0) {
      this.holders = -1;
      return Promise.resolve();
    }
    return new Promise((wake) => this.waiting.push({ exclusive: true, wake }));
  }

  /** Releases a shared or exclusive hold and wakes whoever may go next. */
  release(): void {
    if (this.holders === -1) this.holders = 0;
    else if (this.holders > 0) this.holders--;
    while (this.waiting.length > 0) {
      const next = this.waiting[0]!;
      if (next.exclusive) {
        if (this.holders !== 0) return;
        this.waiting.shift();
        this.holders = -1;
        next.wake();
        return;
      }
      if (this.holders < 0) return;
      this.waiting.shift();
      this.holders++;
      next.wake();
    }
  }
}
