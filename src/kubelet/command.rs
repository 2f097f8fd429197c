//! A container's argv from the pod's `command`/`args` and the image's `Entrypoint`/`Cmd`, with
//! Kubernetes' rules: `command` replaces the entrypoint and drops the image's cmd; `args` replaces cmd.

/// The image's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

/// The argv before `$(VAR)` expansion; empty when neither pod nor image names a program.
pub fn argv(command: Option<&[String]>, args: Option<&[String]>, image: &ImageDefaults) -> Vec<String> {
    let command = command.filter(|c| !c.is_empty());
    let args = args.filter(|a| !a.is_empty());
    match (command, args) {
        (Some(command), Some(args)) => [command, args].concat(),
        (Some(command), None) => command.to_vec(),
        (None, Some(args)) => [&image.entrypoint[..], args].concat(),
        (None, None) => [&image.entrypoint[..], &image.cmd[..]].concat(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn follows_kubernetes_rules() {
        let image = ImageDefaults { entrypoint: v(&["/bin/httpd"]), cmd: v(&["-f", "-p", "80"]) };
        assert_eq!(argv(None, None, &image), v(&["/bin/httpd", "-f", "-p", "80"]));
        assert_eq!(argv(Some(&v(&["/bin/sh"])), None, &image), v(&["/bin/sh"]));
        assert_eq!(argv(None, Some(&v(&["-p", "8080"])), &image), v(&["/bin/httpd", "-p", "8080"]));
        assert_eq!(argv(Some(&v(&["sh", "-c"])), Some(&v(&["true"])), &image), v(&["sh", "-c", "true"]));
        assert_eq!(argv(Some(&[]), None, &image), v(&["/bin/httpd", "-f", "-p", "80"]));
        assert!(argv(None, None, &ImageDefaults::default()).is_empty());
    }
}
