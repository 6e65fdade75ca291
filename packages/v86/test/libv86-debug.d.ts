/**
 * Types for v86's debug ES module bundle, which ships no declaration file. It exports the same
 * `V86` class as the package's main entry (`v86.d.ts`); the debug build keeps internal names
 * (`emulator.v86.cpu.devices.pci`, `cpu.io`, …) unminified, which the device adapter relies on.
 */
declare module "v86/build/libv86-debug.mjs" {
  export { V86 } from "v86";
}
