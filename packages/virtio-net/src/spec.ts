/**
 * Numbers of the virtio network device, from the virtio 1.2 specification §5.1
 * ("Network Device"). Names keep the spec's spelling.
 *
 * @module
 */

// ── §5.1.3 Feature bits ───────────────────────────────────────────────────────────

/** §5.1.3: the device handles packets with a partial checksum (TX offload). */
export const VIRTIO_NET_F_CSUM = 0;
/** §5.1.3: the driver handles packets with a partial checksum (RX offload). */
export const VIRTIO_NET_F_GUEST_CSUM = 1;
/** §5.1.3: control-queue offload reconfiguration. Not offered. */
export const VIRTIO_NET_F_CTRL_GUEST_OFFLOADS = 2;
/** §5.1.3: the device reports its maximum MTU in `mtu`. */
export const VIRTIO_NET_F_MTU = 3;
/** §5.1.3: the driver can receive TSOv4 (GSO TCPV4 frames). Requires GUEST_CSUM. */
export const VIRTIO_NET_F_GUEST_TSO4 = 7;
/** §5.1.3: the driver can receive TSOv6. Requires GUEST_CSUM. */
export const VIRTIO_NET_F_GUEST_TSO6 = 8;
/** §5.1.3: the driver can receive TSO frames with ECN (CWR). Requires GUEST_TSO4 or GUEST_TSO6. */
export const VIRTIO_NET_F_GUEST_ECN = 9;
/** §5.1.3: the device can receive (segment) TSOv4 frames from the driver. Requires CSUM. */
export const VIRTIO_NET_F_HOST_TSO4 = 11;
/** §5.1.3: the device can receive TSOv6 frames. Requires CSUM. */
export const VIRTIO_NET_F_HOST_TSO6 = 12;
/** §5.1.3: the device can receive TSO frames with ECN. Requires HOST_TSO4 or HOST_TSO6. */
export const VIRTIO_NET_F_HOST_ECN = 13;
/** §5.1.3: the device has a given MAC address in `mac`. */
export const VIRTIO_NET_F_MAC = 5;
/** §5.1.3: the driver can merge receive buffers (`num_buffers`). */
export const VIRTIO_NET_F_MRG_RXBUF = 15;
/** §5.1.3: `status` is available (link state, announce). */
export const VIRTIO_NET_F_STATUS = 16;
/** §5.1.3: a control channel (the control virtqueue) is available. */
export const VIRTIO_NET_F_CTRL_VQ = 17;
/** §5.1.3: control-channel RX mode support (promiscuous, all-multicast). */
export const VIRTIO_NET_F_CTRL_RX = 18;
/** §5.1.3: control-channel VLAN filtering. Not offered. */
export const VIRTIO_NET_F_CTRL_VLAN = 19;
/** §5.1.3: extra RX mode commands (all-unicast, no-multicast, no-unicast, no-broadcast). */
export const VIRTIO_NET_F_CTRL_RX_EXTRA = 20;
/** §5.1.3: the driver can send gratuitous packets (announce after migration). */
export const VIRTIO_NET_F_GUEST_ANNOUNCE = 21;
/** §5.1.3: several queue pairs with automatic receive steering. */
export const VIRTIO_NET_F_MQ = 22;
/** §5.1.3: the MAC address can be set through the control channel. */
export const VIRTIO_NET_F_CTRL_MAC_ADDR = 23;

// ── §5.1.4 Device configuration layout ───────────────────────────────────────────

/** §5.1.4: offsets in `struct virtio_net_config`. */
export const VirtioNetConfig = {
  MAC: 0,
  STATUS: 6,
  MAX_VIRTQUEUE_PAIRS: 8,
  MTU: 10,
  SPEED: 12,
  DUPLEX: 16,
  RSS_MAX_KEY_SIZE: 17,
  RSS_MAX_INDIRECTION_TABLE_LENGTH: 18,
  SUPPORTED_HASH_TYPES: 20,
  /** Bytes of the structure through `supported_hash_types`. */
  SIZE: 24,
} as const;

/** §5.1.4: `status` bit: the link is up. */
export const VIRTIO_NET_S_LINK_UP = 1;
/** §5.1.4: `status` bit: the driver should announce itself (gratuitous packets). */
export const VIRTIO_NET_S_ANNOUNCE = 2;

/** §5.1.4: the fewest queue pairs `max_virtqueue_pairs` may hold (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN). */
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN = 1;
/** §5.1.4: the most (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX). */
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX = 0x8000;
/** §5.1.4.1: the smallest MTU a device may report. */
export const VIRTIO_NET_MIN_MTU = 68;

// ── §5.1.6 Device operation: the header ───────────────────────────────────────────

/** §5.1.6: bytes of `struct virtio_net_hdr` with VIRTIO_F_VERSION_1 (num_buffers included). */
export const VIRTIO_NET_HDR_SIZE = 12;
/** §5.1.6: header flag: the checksum from csum_start must be completed. */
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
/** §5.1.6: header flag: the checksum was validated. */
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
/** §5.1.6: header flag: RSC coalescing info (not used). */
export const VIRTIO_NET_HDR_F_RSC_INFO = 4;

/** §5.1.6: `gso_type` values. */
export const VirtioNetGso = {
  NONE: 0,
  TCPV4: 1,
  UDP: 3,
  TCPV6: 4,
  UDP_L4: 5,
  ECN: 0x80,
} as const;

/** §5.1.6: offsets in the 12-byte header. */
export const VirtioNetHdr = {
  FLAGS: 0,
  GSO_TYPE: 1,
  HDR_LEN: 2,
  GSO_SIZE: 4,
  CSUM_START: 6,
  CSUM_OFFSET: 8,
  NUM_BUFFERS: 10,
} as const;

/** §5.1.6.3.1: without MRG_RXBUF or GSO, a receive buffer holds at least 1514 + header bytes. */
export const VIRTIO_NET_MIN_RX_BUFFER = 1526;

// ── §5.1.6.5 Control virtqueue ───────────────────────────────────────────────────

/** §5.1.6.5: the `ack` byte. */
export const VIRTIO_NET_OK = 0;
/** §5.1.6.5: the `ack` byte for a failed or malformed command. */
export const VIRTIO_NET_ERR = 1;

/** §5.1.6.5.1: class VIRTIO_NET_CTRL_RX and its commands (data: one byte, 0 = off). */
export const VIRTIO_NET_CTRL_RX = 0;
/** §5.1.6.5.1 */ export const VIRTIO_NET_CTRL_RX_PROMISC = 0;
/** §5.1.6.5.1 */ export const VIRTIO_NET_CTRL_RX_ALLMULTI = 1;
/** §5.1.6.5.1 (CTRL_RX_EXTRA) */ export const VIRTIO_NET_CTRL_RX_ALLUNI = 2;
/** §5.1.6.5.1 (CTRL_RX_EXTRA) */ export const VIRTIO_NET_CTRL_RX_NOMULTI = 3;
/** §5.1.6.5.1 (CTRL_RX_EXTRA) */ export const VIRTIO_NET_CTRL_RX_NOUNI = 4;
/** §5.1.6.5.1 (CTRL_RX_EXTRA) */ export const VIRTIO_NET_CTRL_RX_NOBCAST = 5;

/** §5.1.6.5.2: class VIRTIO_NET_CTRL_MAC. */
export const VIRTIO_NET_CTRL_MAC = 1;
/** §5.1.6.5.2: two `struct virtio_net_ctrl_mac { le32 entries; u8 macs[entries][6]; }`: unicast, then multicast. */
export const VIRTIO_NET_CTRL_MAC_TABLE_SET = 0;
/** §5.1.6.5.2: six bytes: the new MAC address (CTRL_MAC_ADDR). */
export const VIRTIO_NET_CTRL_MAC_ADDR_SET = 1;

/** §5.1.6.5.3: class VIRTIO_NET_CTRL_VLAN (not supported: answered VIRTIO_NET_ERR). */
export const VIRTIO_NET_CTRL_VLAN = 2;

/** §5.1.6.5.4: class VIRTIO_NET_CTRL_ANNOUNCE. */
export const VIRTIO_NET_CTRL_ANNOUNCE = 3;
/** §5.1.6.5.4: the driver announced itself; the device clears VIRTIO_NET_S_ANNOUNCE. */
export const VIRTIO_NET_CTRL_ANNOUNCE_ACK = 0;

/** §5.1.6.5.5: class VIRTIO_NET_CTRL_MQ. */
export const VIRTIO_NET_CTRL_MQ = 4;
/** §5.1.6.5.5: `le16 virtqueue_pairs` (1..max_virtqueue_pairs). */
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET = 0;

/** §5.1.6.5.6: class VIRTIO_NET_CTRL_GUEST_OFFLOADS (not offered: answered VIRTIO_NET_ERR). */
export const VIRTIO_NET_CTRL_GUEST_OFFLOADS = 5;

/** §5.1.2: receiveq k (0-based pair k) is queue 2k. */
export function rxQueueIndex(pair: number): number {
  return 2 * pair;
}
/** §5.1.2: transmitq k (0-based pair k) is queue 2k + 1. */
export function txQueueIndex(pair: number): number {
  return 2 * pair + 1;
}
/** §5.1.2: the control queue is 2N with MQ negotiated (N = max_virtqueue_pairs), else 2. */
export function ctrlQueueIndex(mq: boolean, maxPairs: number): number {
  return mq ? 2 * maxPairs : 2;
}

/** Ethernet header bytes added to the MTU to get the largest frame (§5.1.4.1: "plus low level ethernet header length"). */
export const ETH_HLEN = 14;
/** Bytes of an 802.1Q tag a frame may carry beyond MTU + ETH_HLEN. */
export const VLAN_HLEN = 4;
