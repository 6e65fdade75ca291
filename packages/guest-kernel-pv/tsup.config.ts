import { defineConfig } from "tsup";
import { pvkitTsup } from "../../tsup.base";

export default defineConfig(pvkitTsup({ index: "src/index.ts" }));
