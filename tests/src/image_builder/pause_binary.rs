//! The `/pause` of test images: a static binary compiled once per test process with `cc -static`,
//! that sleeps until SIGTERM/SIGINT (as PID 1 a signal without a handler would be ignored).

use std::process::Command;
use std::sync::OnceLock;

use crate::TestError;

const PAUSE_C: &str = r#"
#include <signal.h>
#include <unistd.h>
static void quit(int sig) { (void)sig; _exit(0); }
int main(void) {
    signal(SIGTERM, quit);
    signal(SIGINT, quit);
    for (;;) pause();
}
"#;

static PAUSE: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();

fn compile_pause() -> Result<Vec<u8>, String> {
    let dir = tempfile::Builder::new()
        .prefix("snapmend-pause-")
        .tempdir()
        .map_err(|e| format!("creating a temp dir for the pause binary: {e}"))?;
    let src = dir.path().join("pause.c");
    let bin = dir.path().join("pause");
    std::fs::write(&src, PAUSE_C).map_err(|e| format!("{}: {e}", src.display()))?;
    let out = Command::new("cc")
        .args(["-static", "-Os", "-s", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .map_err(|e| {
            format!("running cc (install gcc and libc6-dev: scripts/install-test-deps.sh): {e}")
        })?;
    if !out.status.success() {
        return Err(format!(
            "cc -static failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::read(&bin).map_err(|e| format!("{}: {e}", bin.display()))
}

/// Bytes of the static pause binary (compiled on first use, then cached in memory).
pub fn pause_binary() -> Result<Vec<u8>, TestError> {
    PAUSE
        .get_or_init(compile_pause)
        .clone()
        .map_err(TestError::Build)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// True when a 64-bit little-endian ELF has a PT_INTERP program header (is dynamic).
    fn has_program_interpreter(elf: &[u8]) -> bool {
        let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
        let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
        let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
        (0..phnum).any(|i| {
            let o = phoff + i * phentsize;
            u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3
        })
    }

    #[test]
    fn pause_is_a_static_elf() {
        let bin = pause_binary().unwrap();
        assert_eq!(&bin[..4], b"\x7fELF");
        assert_eq!(bin[4], 2, "64-bit ELF");
        // No program interpreter: a static binary runs in an image that has nothing else.
        assert!(!has_program_interpreter(&bin));
        let sh = std::fs::read("/bin/sh").unwrap();
        assert!(
            has_program_interpreter(&sh),
            "the check itself must detect a dynamic binary"
        );
    }
}
