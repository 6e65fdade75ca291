/*
 * randio: random-offset direct I/O for the v86 guest, which has only busybox (whose dd
 * cannot pick random offsets). Built freestanding for i386 Linux (no libc: raw int 0x80
 * system calls), so it runs in the fixture's busybox initramfs as is.
 *
 *   randio DEVICE r|w COUNT BS SPAN SEED
 *
 * Opens DEVICE with O_DIRECT (the page cache bypassed, as dd's iflag/oflag=direct) and
 * issues COUNT reads or writes of BS bytes, one at a time (queue depth 1), each at a
 * BS-aligned offset drawn uniformly from [0, SPAN) by a xorshift32 generator seeded with
 * SEED (offsets may repeat, as fio's norandommap). Writes store a pattern that changes per
 * request. Exits 0 when every request moved BS bytes; otherwise prints the failing request
 * and exits 1. BS must be a multiple of 512 and at most 64 KiB; SPAN a multiple of BS
 * below 4 GiB; every number is decimal.
 */

/* 64-bit division would need libgcc (not linked): numbers are 32-bit, offsets 64-bit. */
typedef unsigned int u32;
typedef unsigned long long u64;

enum {
  SYS_exit = 1,
  SYS_write = 4,
  SYS_open = 5,
  SYS_pread64 = 180,
  SYS_pwrite64 = 181,
  O_RDONLY = 0,
  O_RDWR = 2,
  O_DIRECT = 040000,
  O_LARGEFILE = 0100000,
  MAX_BS = 64 << 10,
};

/* O_DIRECT wants the buffer aligned to the logical block size; a page covers every disk. */
static unsigned char buffer[MAX_BS] __attribute__((aligned(4096)));

static long sys5(long n, long a, long b, long c, long d, long e) {
  long r;
  /* ebx is the PIC register in some gcc configurations: swap it in and out by hand. */
  __asm__ volatile("xchg %%ebx, %2\n\tint $0x80\n\txchg %%ebx, %2"
                   : "=a"(r)
                   : "a"(n), "r"(a), "c"(b), "d"(c), "S"(d), "D"(e)
                   : "memory");
  return r;
}

static u32 length(const char *s) {
  u32 n = 0;
  while (s[n] != 0) n++;
  return n;
}

static void say(const char *s) { sys5(SYS_write, 2, (long)s, length(s), 0, 0); }

static void say_number(u32 v) {
  char digits[12];
  int i = 11;
  digits[i] = 0;
  do {
    digits[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  say(digits + i);
}

static __attribute__((noreturn)) void quit(int status) {
  for (;;) sys5(SYS_exit, status, 0, 0, 0, 0);
}

static __attribute__((noreturn)) void usage(const char *why) {
  say("randio: ");
  say(why);
  say("\nusage: randio DEVICE r|w COUNT BS SPAN SEED\n");
  quit(2);
}

/* A decimal number below 2^32; anything else is a usage error. */
static u32 number(const char *s) {
  u32 v = 0;
  if (*s == 0) usage("empty number");
  for (; *s != 0; s++) {
    if (*s < '0' || *s > '9' || v > (0xffffffffu - (u32)(*s - '0')) / 10) usage("bad number");
    v = v * 10 + (u32)(*s - '0');
  }
  return v;
}

/* Called by _start with the initial stack pointer: argc, then argv. (Not static: gcc may
 * change a static function's calling convention, and _start calls it the cdecl way.) */
__attribute__((noreturn)) void randio_start(long *sp);
__attribute__((noreturn)) void randio_start(long *sp) {
  long argc = sp[0];
  char **argv = (char **)(sp + 1);
  if (argc != 7) usage("wrong number of arguments");
  const char *mode = argv[2];
  int writing = mode[0] == 'w' && mode[1] == 0;
  if (!writing && !(mode[0] == 'r' && mode[1] == 0)) usage("mode is r or w");
  u32 count = number(argv[3]);
  u32 bs = number(argv[4]);
  u32 span = number(argv[5]);
  u32 seed = number(argv[6]);
  if (bs == 0 || bs % 512 != 0 || bs > MAX_BS) usage("BS must be a multiple of 512, at most 65536");
  if (span < bs || span % bs != 0) usage("SPAN must be a multiple of BS");
  u32 blocks = span / bs;
  long fd = sys5(SYS_open, (long)argv[1], (writing ? O_RDWR : O_RDONLY) | O_DIRECT | O_LARGEFILE, 0, 0, 0);
  if (fd < 0) {
    say("randio: cannot open the device: errno ");
    say_number((u32)-fd);
    say("\n");
    quit(1);
  }
  u32 x = seed | 1; /* xorshift32 needs a non-zero state */
  for (u32 i = 0; i < count; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    u64 offset = (u64)(x % blocks) * bs;
    if (writing) {
      /* Changes per request, so a device that dropped a write cannot look right. */
      for (u32 k = 0; k < bs; k += 4) *(u32 *)(buffer + k) = x + k;
    }
    long r = sys5(writing ? SYS_pwrite64 : SYS_pread64, fd, (long)buffer, (long)bs, (long)(u32)offset,
                  (long)(u32)(offset >> 32));
    if (r != (long)bs) {
      say(writing ? "randio: write " : "randio: read ");
      say_number(i);
      say(" at block ");
      say_number(x % blocks);
      say(r < 0 ? " failed: errno " : " moved only ");
      say_number(r < 0 ? (u32)-r : (u32)r);
      say("\n");
      quit(1);
    }
  }
  quit(0);
}

__asm__(".text\n"
        ".globl _start\n"
        "_start:\n"
        "  xor %ebp, %ebp\n"
        "  mov %esp, %eax\n"
        "  and $-16, %esp\n"
        "  sub $12, %esp\n"
        "  push %eax\n"
        "  call randio_start\n"
        "  hlt\n");
