/**
 * `@pvkit/platform/node`: the Node-only pieces — Ethernet over UDP datagrams
 * (QEMU `-netdev dgram` compatible), a pcap file writer, and `runTrapWorker`, which runs a
 * guest in a `worker_thread` over a trap channel with a watchdog.
 *
 * @packageDocumentation
 * @module @pvkit/platform/node
 */

export { PcapFileWriter } from "./net/pcap-file.js";
export {
  UDP_MAX_PAYLOAD,
  UdpSocketBackend,
  type UdpSocketBackendOptions,
} from "./net/udp-socket.js";
export {
  type RunTrapWorkerOptions,
  runTrapWorker,
  TrapGuestError,
  type TrapWorkerData,
  type TrapWorkerOutcome,
  type TrapWorkerResult,
} from "./trap-worker.js";
