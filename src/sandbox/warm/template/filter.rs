//! The seccomp filter a forked sandbox installs on itself before any script runs: the namespace
//! and mount denials of nsjail.cfg's `[namespace and mount calls]` block, which its template
//! runs without (it makes the sandbox's namespaces and mounts). Classic BPF for x86-64, like the
//! kafel policy it completes; the rest of that policy is the template's own filter, which every
//! forked sandbox inherits (seccomp filters only add up).

/// x86-64 numbers of the calls the block denies outright, by kafel's names (kafel's `umount` is
/// umount2).
pub const DENIED: &[(&str, u32)] = &[
    ("unshare", 272),
    ("setns", 308),
    ("mount", 165),
    ("umount", 166),
    ("pivot_root", 155),
    ("chroot", 161),
    ("fsopen", 430),
    ("fsconfig", 431),
    ("fsmount", 432),
    ("fspick", 433),
    ("move_mount", 429),
    ("open_tree", 428),
    ("mount_setattr", 442),
];
/// clone(2) is denied only with a CLONE_NEW* flag, so that threads and fork keep working.
pub const CLONE: (&str, u32) = ("clone", 56);
pub const CLONE_NAMESPACE_FLAGS: u32 = 0x7E02_0000;

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// System call numbers of the x32 ABI carry this bit; none is allowed to reach a denied call.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_ALLOW: u32 = 0x7FFF_0000;
pub const RET_EPERM: u32 = 0x0005_0000 | 1;

// Classic BPF opcodes (linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;
// Offsets in struct seccomp_data.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;

/// One `struct sock_filter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// The filter's instructions: other architectures are killed (as kafel's are), x32 numbers and
/// the denied calls answer EPERM, clone with a namespace flag EPERM, everything else is allowed
/// here (and decided by the template's own filter).
pub fn program() -> Vec<Insn> {
    let n = DENIED.len();
    // Fixed layout: see the indices below.
    let allow = n + 8;
    let deny = n + 9;
    let insn = |code, jt, jf, k| Insn { code, jt, jf, k };
    // A jump from instruction `at` to instruction `to` skips `to - at - 1` of them.
    let to = |at: usize, target: usize| (target - at - 1) as u8;
    let mut prog = vec![
        insn(LD_W_ABS, 0, 0, ARCH),
        insn(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        insn(RET_K, 0, 0, RET_KILL_PROCESS),
        insn(LD_W_ABS, 0, 0, NR),
        insn(JGE_K, to(4, deny), 0, X32_SYSCALL_BIT),
    ];
    for (i, (_, nr)) in DENIED.iter().enumerate() {
        prog.push(insn(JEQ_K, to(5 + i, deny), 0, *nr));
    }
    prog.push(insn(JEQ_K, 0, to(5 + n, allow), CLONE.1));
    prog.push(insn(LD_W_ABS, 0, 0, ARG0_LOW));
    prog.push(insn(JSET_K, to(7 + n, deny), to(7 + n, allow), CLONE_NAMESPACE_FLAGS));
    prog.push(insn(RET_K, 0, 0, RET_ALLOW));
    prog.push(insn(RET_K, 0, 0, RET_EPERM));
    prog
}

/// The program as the bytes of a `struct sock_filter` array (little-endian, x86-64), in hex for
/// the harness's command line.
pub fn program_hex() -> String {
    let mut hex = String::with_capacity(program().len() * 16);
    for insn in program() {
        let mut bytes = Vec::with_capacity(8);
        bytes.extend_from_slice(&insn.code.to_le_bytes());
        bytes.push(insn.jt);
        bytes.push(insn.jf);
        bytes.extend_from_slice(&insn.k.to_le_bytes());
        for byte in bytes {
            hex.push_str(&format!("{byte:02x}"));
        }
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program the way the kernel does, on one call.
    fn decide(prog: &[Insn], arch: u32, nr: u32, arg0: u64) -> u32 {
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => {
                    acc = match i.k {
                        NR => nr,
                        ARCH => arch,
                        ARG0_LOW => arg0 as u32,
                        other => panic!("load of offset {other}"),
                    }
                }
                JEQ_K | JGE_K | JSET_K => {
                    let taken = match i.code {
                        JEQ_K => acc == i.k,
                        JGE_K => acc >= i.k,
                        _ => acc & i.k != 0,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                RET_K => return i.k,
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn the_filter_denies_namespace_and_mount_calls_and_nothing_else() {
        let prog = program();
        let x86 = AUDIT_ARCH_X86_64;
        for (name, nr) in DENIED {
            assert_eq!(decide(&prog, x86, *nr, 0), RET_EPERM, "{name}");
        }
        let clone_newuser = 0x1000_0000;
        assert_eq!(decide(&prog, x86, CLONE.1, clone_newuser | 17), RET_EPERM);
        assert_eq!(decide(&prog, x86, CLONE.1, 0x20000), RET_EPERM, "CLONE_NEWNS");
        // fork (SIGCHLD) and pthread_create's flags.
        assert_eq!(decide(&prog, x86, CLONE.1, 17), RET_ALLOW);
        assert_eq!(decide(&prog, x86, CLONE.1, 0x003D_0F00), RET_ALLOW);
        for allowed in [0, 1, 2, 57, 59, 231, 435] {
            assert_eq!(decide(&prog, x86, allowed, u64::MAX), RET_ALLOW, "call {allowed}");
        }
        assert_eq!(decide(&prog, x86, X32_SYSCALL_BIT | 272, 0), RET_EPERM);
        assert_eq!(decide(&prog, 0x4000_0003, 1, 0), RET_KILL_PROCESS, "i386");
    }

    #[test]
    fn the_filter_denies_what_nsjail_cfg_denies_to_every_other_jail() {
        let mut expected = crate::sandbox::warm::template::config::denied_calls(include_str!("../../../../nsjail.cfg"))
            .expect("nsjail.cfg has the block");
        expected.sort();
        let mut here: Vec<String> = DENIED.iter().chain([&CLONE]).map(|(name, _)| name.to_string()).collect();
        here.sort();
        assert_eq!(here, expected);
        assert!(
            include_str!("../../../../nsjail.cfg").contains(&format!("{CLONE_NAMESPACE_FLAGS:#X}").replace("0X", "0x"))
        );
    }

    #[test]
    fn the_hex_is_eight_bytes_per_instruction() {
        let hex = program_hex();
        assert_eq!(hex.len(), program().len() * 16);
        // The first instruction loads the architecture: 20 00 00 00 04 00 00 00.
        assert_eq!(&hex[..16], "2000000004000000");
    }
}
