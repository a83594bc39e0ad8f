//! The configuration while it is being read: [`Draft`] holds each setting's
//! typed value as "not given yet" (`None`) until its row of the table fills
//! it. The rules that involve more than one setting are checked on the
//! draft ([`Draft::settle`]); the [`Config`] is built once, at the end, from
//! values that are all present ([`Draft::into_config`]).

use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

use super::env::Env;
use super::error::ConfigError;
use super::public_url::{DEVICE_PATHS, PublicUrl};
use super::redirect::RedirectUri;
use super::{AcmeConfig, AppConfig, Config, Cors, Listen, TlsFiles, UpstreamProxy};
use crate::http::{self, IpNet};
use crate::secret::Secret;

/// One field per setting's value; `None` until its row of the table fills
/// it. A setting that is off when unset stays `None`.
#[derive(Default)]
pub(crate) struct Draft {
    pub(super) client_id: Option<String>,
    pub(super) client_secret: Option<Secret>,
    pub(super) redirect_uri: Option<RedirectUri>,
    pub(super) allowed_redirect_uris: Option<Vec<RedirectUri>>,
    /// `SPOTIFY_APPS`: the apps' names.
    pub(super) app_names: Option<Vec<String>>,
    /// Each app of `SPOTIFY_APPS`, as its own variables gave it.
    pub(super) apps: Vec<AppDraft>,
    pub(super) token_url: Option<String>,
    /// `SPOTIFY_CA_FILE` and the certificates (DER) read from it.
    pub(super) ca_file: Option<(PathBuf, Vec<Vec<u8>>)>,
    pub(super) upstream_proxy: Option<UpstreamProxy>,
    pub(super) encryption_secret: Option<Secret>,
    pub(super) encryption_secrets_previous: Option<Vec<Secret>>,
    /// `REFRESH_TOKEN_LIFETIME_SECS`: `Some(None)` for `0`, never stated.
    pub(super) refresh_token_lifetime: Option<Option<Duration>>,
    pub(super) listen: Option<Listen>,
    pub(super) worker_threads: Option<usize>,
    pub(super) swap_path: Option<String>,
    pub(super) refresh_path: Option<String>,
    pub(super) cors: Option<Cors>,
    /// `PUBLIC_URL`: device login on.
    pub(super) public_url: Option<PublicUrl>,
    pub(super) device_max_pending: Option<usize>,
    pub(super) upstream_timeout: Option<Duration>,
    pub(super) log_level: Option<LevelFilter>,
    pub(super) rate_limit_per_minute: Option<u32>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_connections_per_client: Option<usize>,
    pub(super) client_ipv6_prefix: Option<u8>,
    pub(super) trusted_proxies: Option<Vec<IpNet>>,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) acme_domains: Option<Vec<String>>,
    pub(super) acme_directory_url: Option<String>,
    pub(super) acme_email: Option<String>,
    /// `ACME_CA_FILE` and the certificates (DER) read from it.
    pub(super) acme_ca_file: Option<(PathBuf, Vec<Vec<u8>>)>,
    pub(super) acme_state_dir: Option<PathBuf>,
    pub(super) metrics: Option<bool>,
    pub(super) metrics_allow: Option<Vec<IpNet>>,
}

/// One app's values while they are read; `None` until its row fills it.
#[derive(Default)]
pub(crate) struct AppDraft {
    /// Its name in `SPOTIFY_APPS`.
    pub(super) name: String,
    pub(super) client_id: Option<String>,
    pub(super) client_secret: Option<Secret>,
    pub(super) redirect_uri: Option<RedirectUri>,
    pub(super) allowed_redirect_uris: Option<Vec<RedirectUri>>,
    pub(super) cors: Option<Cors>,
}

impl AppDraft {
    /// The app, once every required field holds its value.
    pub(super) fn into_app(self) -> Option<AppConfig> {
        Some(AppConfig {
            name: Some(self.name),
            client_id: self.client_id?,
            client_secret: self.client_secret?,
            redirect_uri: self.redirect_uri?,
            allowed_redirect_uris: self.allowed_redirect_uris.unwrap_or_default(),
            cors: self.cors.unwrap_or(Cors::Off),
        })
    }
}

impl Draft {
    /// The rules that involve more than one setting. A value whose own row
    /// reported a problem is `None` here and is not reported again.
    pub(super) fn settle(&mut self, env: &Env) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        // systemd socket activation, for this process, wins over LISTEN_ADDR.
        let pid = std::process::id().to_string();
        if env.get("LISTEN_FDS").is_some() && env.get("LISTEN_PID") == Some(pid.as_str()) {
            self.listen = Some(Listen::SocketActivation);
        }
        if self.swap_path.is_some() && self.swap_path == self.refresh_path {
            errors.push(ConfigError::SamePaths);
        }
        if self.public_url.is_some() {
            let plain = [
                ("SWAP_PATH", &self.swap_path),
                ("REFRESH_PATH", &self.refresh_path),
            ];
            for (var, path) in plain {
                if let Some(path) = path.as_ref().filter(|p| DEVICE_PATHS.contains(&p.as_str())) {
                    errors.push(ConfigError::DevicePathTaken {
                        var: var.into(),
                        path: path.clone(),
                    });
                }
            }
        }
        let previous = self.encryption_secrets_previous.as_ref();
        if previous.is_some_and(|p| !p.is_empty()) && self.encryption_secret.is_none() {
            errors.push(ConfigError::PreviousWithoutCurrent);
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            errors.push(ConfigError::HalfTls);
        }
        if self.acme_domains.is_some() && (self.tls_cert.is_some() || self.tls_key.is_some()) {
            errors.push(ConfigError::AcmeWithTlsFiles);
        }
        errors
    }

    /// The configuration, once every setting that is required or has a
    /// default holds its value; `None` while one does not.
    pub(super) fn into_config(self) -> Option<Config> {
        let (ca_file, extra_roots) = match self.ca_file {
            Some((path, roots)) => (Some(path), roots),
            None => (None, Vec::new()),
        };
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            _ => None,
        };
        let acme = match self.acme_domains {
            Some(domains) => {
                let (ca_file, roots) = match self.acme_ca_file {
                    Some((path, roots)) => (Some(path), roots),
                    None => (None, Vec::new()),
                };
                Some(AcmeConfig {
                    domains,
                    directory_url: self.acme_directory_url?,
                    email: self.acme_email,
                    ca_file,
                    roots,
                    state_dir: self.acme_state_dir?,
                })
            }
            None => None,
        };
        let apps = match self.app_names {
            Some(_) => self
                .apps
                .into_iter()
                .map(AppDraft::into_app)
                .collect::<Option<Vec<_>>>()?,
            None => vec![AppConfig {
                name: None,
                client_id: self.client_id?,
                client_secret: self.client_secret?,
                redirect_uri: self.redirect_uri?,
                allowed_redirect_uris: self.allowed_redirect_uris.unwrap_or_default(),
                cors: self.cors.unwrap_or(Cors::Off),
            }],
        };
        Some(Config {
            apps,
            token_url: self.token_url?,
            extra_roots,
            ca_file,
            upstream_proxy: self.upstream_proxy,
            encryption_secret: self.encryption_secret,
            encryption_secrets_previous: self.encryption_secrets_previous.unwrap_or_default(),
            refresh_token_lifetime: self.refresh_token_lifetime?,
            listen: self.listen?,
            http: http::Settings {
                worker_threads: self.worker_threads?,
                max_connections: self.max_connections,
                max_connections_per_client: self.max_connections_per_client?,
                client_ipv6_prefix: self.client_ipv6_prefix?,
                trusted_proxies: self.trusted_proxies?,
                // Shutdown waits for requests in hand: upstream calls.
                request_time_limit: self.upstream_timeout?,
            },
            swap_path: self.swap_path?,
            refresh_path: self.refresh_path?,
            public_url: self.public_url,
            device_max_pending: self.device_max_pending?,
            upstream_timeout: self.upstream_timeout?,
            log_level: self.log_level?,
            rate_limit_per_minute: self.rate_limit_per_minute?,
            tls,
            acme,
            metrics: self.metrics?,
            metrics_allow: self.metrics_allow?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{base, with};

    #[test]
    fn tls_files_are_recorded_and_must_come_in_pairs() {
        // Loaded where the server starts, not here.
        let c = with(&[
            ("TLS_CERT_FILE", "/no/cert.pem"),
            ("TLS_KEY_FILE", "/no/key.pem"),
        ])
        .unwrap();
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert: "/no/cert.pem".into(),
                key: "/no/key.pem".into()
            })
        );
        let errs = with(&[("TLS_KEY_FILE", "/no/key.pem")]).unwrap_err();
        assert_eq!(errs.0, vec![ConfigError::HalfTls]);
    }

    #[test]
    fn acme_takes_its_settings_and_refuses_certificate_files() {
        let c = with(&[
            (
                "ACME_DOMAINS",
                "Pi.Example.org, b.example.org,pi.example.org",
            ),
            ("STATE_DIRECTORY", "/var/lib/sts:/var/lib/other"),
        ])
        .unwrap();
        let acme = c.acme.expect("ACME on");
        assert_eq!(acme.domains, ["pi.example.org", "b.example.org"]);
        assert_eq!(
            acme.directory_url,
            "https://acme-v02.api.letsencrypt.org/directory"
        );
        assert_eq!(acme.state_dir, std::path::Path::new("/var/lib/sts"));
        assert_eq!((acme.email, acme.ca_file), (None, None));
        let c = with(&[("ACME_DOMAINS", "pi.example.org")]).unwrap();
        let state_dir = c.acme.expect("ACME on").state_dir;
        assert_eq!(
            state_dir,
            std::path::Path::new("/var/lib/spotify-token-swap")
        );
        assert_eq!(with(&[("ACME_EMAIL", "a@b.example")]).unwrap().acme, None);
        for file in ["TLS_CERT_FILE", "TLS_KEY_FILE"] {
            let errs = with(&[("ACME_DOMAINS", "pi.example.org"), (file, "/x.pem")]).unwrap_err();
            assert!(
                errs.0.contains(&ConfigError::AcmeWithTlsFiles),
                "{file}: {errs}"
            );
        }
    }

    #[test]
    fn previous_secrets_need_a_current_one() {
        let errs = with(&[(
            "ENCRYPTION_SECRET_PREVIOUS",
            "0123456789abcdef0123456789abcdef",
        )])
        .unwrap_err();
        assert_eq!(errs.0, vec![ConfigError::PreviousWithoutCurrent]);
    }

    #[test]
    fn swap_and_refresh_paths_must_differ() {
        let errs = with(&[("SWAP_PATH", "/token"), ("REFRESH_PATH", "/token")]).unwrap_err();
        assert_eq!(errs.0, vec![ConfigError::SamePaths]);
    }

    #[test]
    fn with_public_url_the_token_paths_cannot_be_device_paths() {
        let url = ("PUBLIC_URL", "https://swap.example.org");
        let errs =
            with(&[url, ("SWAP_PATH", "/callback"), ("REFRESH_PATH", "/device")]).unwrap_err();
        assert_eq!(
            errs.to_string(),
            "configuration error: SWAP_PATH makes /callback, a path of device login \
             (PUBLIC_URL is set); choose another\n\
             configuration error: REFRESH_PATH makes /device, a path of device login \
             (PUBLIC_URL is set); choose another"
        );
        assert!(with(&[("SWAP_PATH", "/callback")]).is_ok());
    }

    #[test]
    fn socket_activation_for_this_process_wins_over_the_listen_address() {
        let pid = std::process::id().to_string();
        let mut vars: Vec<(&str, &str)> = base();
        vars.extend([("LISTEN_FDS", "1"), ("LISTEN_ADDR", "127.0.0.1:9")]);
        let c = Config::from_vars(vars.iter().copied().chain([("LISTEN_PID", pid.as_str())]));
        assert_eq!(c.unwrap().listen, Listen::SocketActivation);
        let c = Config::from_vars(vars.iter().copied().chain([("LISTEN_PID", "1")]));
        assert_eq!(
            c.unwrap().listen,
            Listen::Addr("127.0.0.1:9".parse().unwrap())
        );
    }

    #[test]
    fn a_draft_missing_a_required_value_makes_no_config() {
        let mut draft = Draft::default();
        let settled = draft.settle(&Env::new(base()));
        assert!(settled.is_empty(), "{settled:?}");
        assert!(draft.into_config().is_none());
    }
}
