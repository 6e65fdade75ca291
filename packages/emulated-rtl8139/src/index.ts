/**
 * `@pvkit/emulated-rtl8139`.
 *
 * @packageDocumentation
 */
export {};
