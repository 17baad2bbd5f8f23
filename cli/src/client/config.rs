//! Where the client finds the controller and its credentials.
//!
//! URL: `--url`, `EXPO_CONTROLLER_URL`, `~/.expo-free-agent/config.json`
//! (`controllerUrl`), else `http://localhost:3000`. Key: `--api-key`,
//! `EXPO_CONTROLLER_API_KEY`, `CONTROLLER_API_KEY`, the config file (`apiKey`),
//! else the key a local controller generated (`$FREEAGENT_DATA_DIR/api-key`,
//! `./data/api-key`), so on the controller's own machine nothing needs setting up.
//! Build tokens are kept in `~/.expo-free-agent/build-tokens.json`, as the
//! original CLI kept them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

/// The default controller URL (the original CLI's).
pub const DEFAULT_URL: &str = "http://localhost:3000";

/// The client's folder (`~/.expo-free-agent`).
pub fn config_dir() -> Option<PathBuf> {
    std::env::var_os("FREEAGENT_CONFIG_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".expo-free-agent")))
}

fn config_file() -> Option<Value> {
    let text = std::fs::read_to_string(config_dir()?.join("config.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn file_value(config: &Option<Value>, keys: &[&str]) -> Option<String> {
    let config = config.as_ref()?;
    keys.iter().find_map(|k| config.get(*k).and_then(Value::as_str)).map(str::to_owned)
}

/// The controller URL to use.
pub fn resolve_url(flag: Option<&str>) -> String {
    let config = config_file();
    flag.map(str::to_owned)
        .or_else(|| std::env::var("EXPO_CONTROLLER_URL").ok().filter(|v| !v.is_empty()))
        .or_else(|| file_value(&config, &["controllerUrl", "controller_url"]))
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// The API key to use, if any can be found.
pub fn resolve_key(flag: Option<&str>) -> Option<String> {
    let config = config_file();
    if let Some(key) = flag
        .map(str::to_owned)
        .or_else(|| std::env::var("EXPO_CONTROLLER_API_KEY").ok().filter(|v| !v.is_empty()))
        .or_else(|| std::env::var("CONTROLLER_API_KEY").ok().filter(|v| !v.is_empty()))
        .or_else(|| file_value(&config, &["apiKey", "api_key"]))
    {
        return Some(key);
    }
    let data_dir = std::env::var_os("FREEAGENT_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("./data"));
    std::fs::read_to_string(data_dir.join(dispatcher::auth::API_KEY_FILE)).ok().map(|k| k.trim().to_owned())
}

fn tokens_path() -> Option<PathBuf> {
    Some(config_dir()?.join("build-tokens.json"))
}

/// Build tokens kept from earlier submissions.
pub fn load_tokens() -> BTreeMap<String, String> {
    tokens_path()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Keeps a build token (mode 0600).
pub fn save_token(build: &str, token: &str) -> std::io::Result<()> {
    let Some(path) = tokens_path() else { return Ok(()) };
    let mut tokens = load_tokens();
    tokens.insert(build.to_owned(), token.to_owned());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&tokens)?)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(tmp, path)
}
