//! Finding the repository's `deploy/` directory and rendering its `{{placeholder}}` templates.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Where the templates live: `PARLEY_DEPLOY_DIR`, else the nearest `deploy/` above the
/// current directory or above this crate's source.
pub fn locate_deploy_dir() -> anyhow::Result<PathBuf> {
    if let Some(explicit) = std::env::var_os("PARLEY_DEPLOY_DIR") {
        let explicit = PathBuf::from(explicit);
        if !is_deploy_dir(&explicit) {
            bail!("PARLEY_DEPLOY_DIR={} has no nginx/nginx.conf", explicit.display());
        }
        return Ok(explicit);
    }
    let starting_points = [
        std::env::current_dir().ok(),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
    ];
    for start in starting_points.into_iter().flatten() {
        for ancestor in start.ancestors() {
            let candidate = ancestor.join("deploy");
            if is_deploy_dir(&candidate) {
                return Ok(candidate);
            }
        }
    }
    bail!("cannot find the deploy/ directory (with nginx/nginx.conf); set PARLEY_DEPLOY_DIR")
}

fn is_deploy_dir(candidate: &Path) -> bool {
    candidate.join("nginx").join("nginx.conf").is_file()
}

/// Reads `deploy/<relative>` and fills it in.
pub fn render_deploy_template(deploy_dir: &Path, relative: &str, values: &[(&str, String)]) -> anyhow::Result<String> {
    let path = deploy_dir.join(relative);
    let template = std::fs::read_to_string(&path).with_context(|| format!("reading template {}", path.display()))?;
    render_template(&template, values).with_context(|| format!("rendering template {}", path.display()))
}

/// Replaces every `{{key}}`; a placeholder left without a value is an error, so a
/// template and its renderer cannot silently drift apart.
pub fn render_template(template: &str, values: &[(&str, String)]) -> anyhow::Result<String> {
    let mut rendered = template.to_owned();
    for (key, value) in values {
        rendered = rendered.replace(&format!("{{{{{key}}}}}"), value);
    }
    if let Some(start) = rendered.find("{{") {
        let rest = &rendered[start..];
        let end = rest.find("}}").map_or(rest.len(), |end| end + 2);
        bail!("no value for placeholder {}", &rest[..end]);
    }
    Ok(rendered)
}

/// Writes a rendered file, creating its directory.
pub fn write_rendered(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_placeholders_and_rejects_missing_ones() {
        let rendered = render_template("port = {{port}}\n", &[("port", "1".into())]).unwrap();
        assert_eq!(rendered, "port = 1\n");
        let error = render_template("{{port}} {{socket}}", &[("port", "1".into())]).unwrap_err();
        assert!(error.to_string().contains("{{socket}}"), "{error}");
    }

    #[test]
    fn finds_the_repository_deploy_dir() {
        let deploy = locate_deploy_dir().unwrap();
        assert!(deploy.join("mariadb").join("master.cnf").is_file());
    }
}
