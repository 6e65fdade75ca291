/**
 * `@pvkit/virtio-net`.
 *
 * @packageDocumentation
 */
export {};
