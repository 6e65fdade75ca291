import { EthernetSwitch, HostResponder } from "@pvkit/platform";
import { VirtioNetDevice } from "@pvkit/virtio-net";
import { type AttachPvkitOptions, attachPvkit, type V86Emulator } from "../src/index.js";
import { ensureFixture } from "../test/fixture.js";
import { bootLinux } from "../test/harness.js";

const fixture = await ensureFixture();
const sw1 = new EthernetSwitch();
const h1 = new HostResponder({ ip: "10.0.2.2" });
h1.attachTo(sw1.createPort("host"));
const dev = new VirtioNetDevice({ backend: sw1.createPort("vnet") });
const options: AttachPvkitOptions = {
  devices: [{ kind: "virtio-pci", device: dev, name: "vnet" }],
};
const bulk = (tag: string) =>
  `t0=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/zero bs=64k count=16 2>/dev/null | nc 10.0.2.2 9; t1=$(cut -d' ' -f1 /proc/uptime); echo "T ${tag} $t0 $t1"`;
const r = await bootLinux({
  fixture,
  onLoaded: (e) => {
    attachPvkit(e as unknown as V86Emulator, options);
  },
  script: `ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0
ping -c 1 10.0.2.2 >/dev/null
cat /sys/module/virtio_net/parameters/napi_tx | sed 's/^/NAPI /'
ethtool -k eth0 2>/dev/null | head -3
${bulk("r1")}
${bulk("r2")}
${bulk("r3")}
${bulk("r4")}
${bulk("r5")}
`,
  timeoutMs: 200_000,
});
console.log(r.scriptLines.join("\n"));
