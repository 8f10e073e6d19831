//! `templates`: where the operator's own page templates are.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TemplatesConfig {
    /// A file here with a template's name (e.g. `sso_error.html`) is used
    /// instead of the built-in one (Synapse's key).
    pub custom_template_directory: Option<PathBuf>,
}

impl TemplatesConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(dir) = &self.custom_template_directory
            && !dir.is_dir()
        {
            return Err(ConfigError::new(
                "templates.custom_template_directory",
                format!("{} is not a directory", dir.display()),
                "Give an existing directory holding templates named as the built-in ones, e.g. `sso_error.html`.",
            ));
        }
        Ok(())
    }
}
