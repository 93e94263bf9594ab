//! Platform choice for image indexes, like containerd's default matcher on a node:
//! this host's platform first, then the platforms it can also run (containerd-layout.md §5.3).

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    /// Normalized: `""` for amd64 and arm64/v8, `v5`…`v8` for arm.
    pub variant: String,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

impl Platform {
    /// Normalizes Go/OCI spellings the way containerd's `platforms.Normalize` does.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let os = os.to_ascii_lowercase();
        let arch = architecture.to_ascii_lowercase();
        let variant = variant.unwrap_or("").to_ascii_lowercase();
        let (architecture, variant) = match arch.as_str() {
            "i386" | "386" => ("386".to_string(), String::new()),
            "x86_64" | "x86-64" | "amd64" => (
                "amd64".to_string(),
                if variant == "v1" {
                    String::new()
                } else {
                    variant
                },
            ),
            "aarch64" | "arm64" => (
                "arm64".to_string(),
                if matches!(variant.as_str(), "8" | "v8") {
                    String::new()
                } else {
                    variant
                },
            ),
            "armhf" => ("arm".to_string(), "v7".to_string()),
            "armel" => ("arm".to_string(), "v6".to_string()),
            "arm" => {
                let v = match variant.as_str() {
                    "" | "7" => "v7".to_string(),
                    "5" | "6" | "8" => format!("v{variant}"),
                    _ => variant,
                };
                ("arm".to_string(), v)
            }
            _ => (arch, variant),
        };
        Platform {
            os,
            architecture,
            variant,
        }
    }

    /// The platform this binary runs on (arm is assumed to be v7).
    pub fn host() -> Platform {
        Platform::new(std::env::consts::OS, std::env::consts::ARCH, None)
    }

    /// The platforms this host accepts, best first: itself, then what it can also run.
    pub fn accepted(&self) -> Vec<Platform> {
        let same = |arch: &str, variant: &str| Platform {
            os: self.os.clone(),
            architecture: arch.into(),
            variant: variant.into(),
        };
        let arm_from = |top: u8| {
            (5..=top)
                .rev()
                .map(|v| same("arm", &format!("v{v}")))
                .collect::<Vec<_>>()
        };
        let mut list = vec![self.clone()];
        match (self.architecture.as_str(), self.variant.as_str()) {
            ("amd64", _) => list.push(same("386", "")),
            ("arm64", _) => list.extend(arm_from(8)),
            ("arm", v) => {
                let top = v
                    .strip_prefix('v')
                    .and_then(|n| n.parse::<u8>().ok())
                    .unwrap_or(7);
                list = arm_from(top);
            }
            _ => {}
        }
        list
    }

    /// Rank of `candidate` for this host: `Some(0)` best, `None` not runnable here.
    pub fn rank(&self, candidate: &Platform) -> Option<usize> {
        self.accepted().iter().position(|p| p == candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        Platform::new(os, arch, variant)
    }

    #[test]
    fn spellings_normalize() {
        assert_eq!(p("Linux", "x86_64", None), p("linux", "amd64", Some("v1")));
        assert_eq!(p("linux", "aarch64", Some("8")), p("linux", "arm64", None));
        assert_eq!(p("linux", "arm64", Some("v8")).variant, "");
        assert_eq!(p("linux", "armhf", None), p("linux", "arm", Some("7")));
        assert_eq!(p("linux", "arm", None).variant, "v7");
        assert_eq!(p("linux", "armel", None).variant, "v6");
        assert_eq!(p("linux", "i386", None).architecture, "386");
        assert_eq!(p("linux", "riscv64", None).to_string(), "linux/riscv64");
        assert_eq!(p("linux", "arm", Some("6")).to_string(), "linux/arm/v6");
    }

    #[test]
    fn amd64_prefers_itself_then_386() {
        let host = p("linux", "amd64", None);
        assert_eq!(host.rank(&p("linux", "amd64", None)), Some(0));
        assert_eq!(host.rank(&p("linux", "386", None)), Some(1));
        assert_eq!(host.rank(&p("linux", "arm64", None)), None);
        assert_eq!(host.rank(&p("windows", "amd64", None)), None);
        assert_eq!(
            host.rank(&p("linux", "amd64", Some("v3"))),
            None,
            "a newer micro-architecture level is not assumed"
        );
    }

    #[test]
    fn arm64_falls_back_to_32_bit_arm_newest_first() {
        let host = p("linux", "arm64", None);
        assert_eq!(host.rank(&p("linux", "arm64", Some("v8"))), Some(0));
        assert_eq!(host.rank(&p("linux", "arm", Some("v8"))), Some(1));
        assert_eq!(host.rank(&p("linux", "arm", Some("v7"))), Some(2));
        assert_eq!(host.rank(&p("linux", "arm", Some("v5"))), Some(4));
        assert_eq!(host.rank(&p("linux", "amd64", None)), None);
    }

    #[test]
    fn arm_accepts_only_older_variants() {
        let host = p("linux", "arm", Some("v6"));
        assert_eq!(host.rank(&p("linux", "arm", Some("v6"))), Some(0));
        assert_eq!(host.rank(&p("linux", "arm", Some("v5"))), Some(1));
        assert_eq!(host.rank(&p("linux", "arm", Some("v7"))), None);
    }

    #[test]
    fn the_host_platform_is_normalized() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        assert_eq!(
            host,
            Platform::new(&host.os, &host.architecture, Some(&host.variant))
        );
    }
}
