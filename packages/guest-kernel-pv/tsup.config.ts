import { defineConfig } from "tsup";
import { pvkitTsup } from "../../tsup.base";

// `node`: the threaded runtime's host side; `threaded`: its guest side (browser-safe);
// `worker`: the guest's Node worker entry, which bootThreaded starts from next to the built
// module (dist/worker.js or worker.cjs).
export default defineConfig(
  pvkitTsup({
    index: "src/index.ts",
    node: "src/node.ts",
    threaded: "src/threaded.ts",
    worker: "src/worker.ts",
  }),
);
