import { bareZeroCopy, pvkitZeroCopy, SHAPES, SplitQueueRig } from "./suites/split-queue.js";
const shape = SHAPES[Number(process.argv[2] ?? 1)]!;
const rig = new SplitQueueRig(shape, "ArrayBuffer");
const q = rig.createDeviceQueue();
const rig2 = new SplitQueueRig(shape, "ArrayBuffer");
const bare = rig2.createBareDevice();
let bp = 1e9, bb = 1e9;
for (let round = 0; round < 30; round++) {
  let t0 = performance.now();
  const N = 20_000;
  for (let i = 0; i < N; i++) { rig.publish(); pvkitZeroCopy(q); }
  bp = Math.min(bp, (performance.now() - t0) / (N * 32) * 1e6);
  t0 = performance.now();
  for (let i = 0; i < N; i++) { rig2.publish(); bareZeroCopy(bare); }
  bb = Math.min(bb, (performance.now() - t0) / (N * 32) * 1e6);
}
console.log(`min: pvkit ${bp.toFixed(1)} ns/chain, bare ${bb.toFixed(1)} ns/chain, ratio ${(bp / bb).toFixed(2)}`);
