import { defineConfig } from "tsup";
import { pvkitTsup } from "../../tsup.base";

export default defineConfig(
  // typed-emitter is types only and a devDependency: its interface is copied into dist/*.d.ts.
  pvkitTsup({ index: "src/index.ts", node: "src/node.ts" }, { dtsResolve: ["typed-emitter"] }),
);
