//! Automatic certificates (`ACME_DOMAINS`) against Debian's `pebble`, the
//! RFC 8555 test CA, with `pebble-challtestsrv` as its DNS: every name
//! resolves to 127.0.0.1, and pebble's `tlsPort` is the server's own port,
//! so pebble's `tls-alpn-01` validation reaches the server's listener.
//! Pebble's HTTPS uses a certificate of [`Pki`] (`ACME_CA_FILE` trusts its
//! CA); pebble rejects 5 % of nonces as ever (`PEBBLE_WFE_NONCEREJECT`
//! unset), and `PEBBLE_VA_NOSLEEP=1` skips its random validation delays.
//!
//! Covered: first issuance within a minute; a client trusting only
//! pebble's root (from its management API) gets the certificate for the
//! name by SNI; a renewal (pebble's `certificateValidityPeriod` made short)
//! swaps the certificate while a keep-alive connection stays open; pebble
//! down at start (the server says why, retries, serves once it can, and
//! fails handshakes cleanly until then); a restart reuses the stored
//! account and certificate (no new order); the state directory's modes;
//! refused nonces sent again (a third refused, in a test of its own); no
//! challenge certificate outside a validation; `healthcheck` pinning the
//! stored certificate; `check-config` making nothing; and `ACME_DOMAINS`
//! with `TLS_CERT_FILE` is exit 2.
//!
//! Without `pebble` installed these tests say so and pass, unless
//! `STS_REQUIRE_PEBBLE` is set, as CI does.

use crate::support;

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::conns::{TlsClient, tls_exchange};
use support::mock::MockSpotify;
use support::pki::Pki;
use support::{ServerProc, TempDir, heavy, run_binary, server_vars, start_mock};

const PEBBLE: &str = "/usr/bin/pebble";
const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";
/// The name the certificates are for (challtestsrv resolves every name to
/// 127.0.0.1).
const DOMAIN: &str = "sts.example.org";
/// What the first issuance may take (the issue says: within a minute).
const FIRST_ISSUANCE: Duration = Duration::from_secs(60);
/// How long pebble gets to open its ports.
const PEBBLE_START: Duration = Duration::from_secs(15);
/// The short lifetime of the renewal test's certificates: renewal is due
/// when a third is left, 10 s before expiry.
const SHORT_VALIDITY_SECS: u64 = 30;
const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: sts.example.org\r\n\r\n";
const METRICS: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: sts.example.org\r\n\r\n";

/// Whether pebble can be run; if not, says so (or fails, when
/// `STS_REQUIRE_PEBBLE` is set).
fn pebble_present(test: &str) -> bool {
    if Path::new(PEBBLE).exists() && Path::new(CHALLTESTSRV).exists() {
        return true;
    }
    let why = format!("{PEBBLE} or {CHALLTESTSRV} is missing (apt-get install pebble)");
    if std::env::var_os("STS_REQUIRE_PEBBLE").is_some_and(|v| !v.is_empty()) {
        panic!("{test}: STS_REQUIRE_PEBBLE is set, but {why}");
    }
    eprintln!("{test}: skipped: {why}");
    false
}

/// A free loopback port (bound and let go: pebble's config must name the
/// server's port before the server starts).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// Pebble and its DNS, killed on drop.
struct Pebble {
    children: Vec<Child>,
    acme_port: u16,
    management_port: u16,
    output: Arc<Mutex<String>>,
}

impl Pebble {
    /// Starts challtestsrv and pebble on free ports, validating
    /// `tls-alpn-01` on `tls_port`, with certificates valid `validity`
    /// seconds (`None`: pebble's default, years). Pebble's own HTTPS uses
    /// `pki`'s server certificate.
    fn start(pki: &Pki, tls_port: u16, validity: Option<u64>) -> Pebble {
        Pebble::start_on(pki, tls_port, validity, free_port(), None)
    }

    /// [`Pebble::start`] on `acme_port`, rejecting `nonce_reject` % of
    /// nonces (`None`: pebble's 5 %).
    fn start_on(
        pki: &Pki,
        tls_port: u16,
        validity: Option<u64>,
        acme_port: u16,
        nonce_reject: Option<u8>,
    ) -> Pebble {
        let (dns_port, management_port, dns_management_port) =
            (free_port(), free_port(), free_port());
        let output = Arc::new(Mutex::new(String::new()));
        let dns = Command::new(CHALLTESTSRV)
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_management_port}")])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv starts");
        let config_file = pebble_config(pki, tls_port, validity, acme_port, management_port);
        let mut pebble = Command::new(PEBBLE)
            .args(["-config", &config_file])
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env_remove("PEBBLE_WFE_NONCEREJECT")
            .envs(nonce_reject.map(|percent| ("PEBBLE_WFE_NONCEREJECT", percent.to_string())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pebble starts");
        if let Some(pipe) = pebble.stdout.take() {
            collect(pipe, Arc::clone(&output));
        }
        if let Some(pipe) = pebble.stderr.take() {
            collect(pipe, Arc::clone(&output));
        }
        let pebble = Pebble {
            children: vec![dns, pebble],
            acme_port,
            management_port,
            output,
        };
        let deadline = Instant::now() + PEBBLE_START;
        for port in [acme_port, management_port, dns_management_port] {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "pebble did not listen on {port}:\n{}",
                    pebble.output()
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
        pebble
    }

    fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Pebble's root, made at its start, from its management API.
    fn root(&self, pki: &Pki) -> CertificateDer<'static> {
        let ca = pki.der("ca.pem");
        let roots = ureq::tls::RootCerts::new_with_certs(&[
            ureq::tls::Certificate::from_der(&ca).to_owned()
        ]);
        let tls = ureq::tls::TlsConfig::builder().root_certs(roots).build();
        let agent =
            ureq::Agent::new_with_config(ureq::Agent::config_builder().tls_config(tls).build());
        let url = format!("https://127.0.0.1:{}/roots/0", self.management_port);
        let pem = agent
            .get(&url)
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("pebble's root is PEM")
    }
}

/// Pebble's configuration file (in `pki`'s directory): loopback ports,
/// `pki`'s server certificate, validation on `tls_port`.
fn pebble_config(
    pki: &Pki,
    tls_port: u16,
    validity: Option<u64>,
    acme_port: u16,
    management_port: u16,
) -> String {
    let mut config = serde_json::json!({ "pebble": {
        "listenAddress": format!("127.0.0.1:{acme_port}"),
        "managementListenAddress": format!("127.0.0.1:{management_port}"),
        "certificate": pki.path("server.pem"),
        "privateKey": pki.path("server.key"),
        "httpPort": free_port(),
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    if let Some(secs) = validity {
        config["pebble"]["certificateValidityPeriod"] = secs.into();
    }
    pki.dir
        .write(&format!("pebble-{acme_port}.json"), config.to_string())
}

/// Appends what `pipe` says to `output`, on a thread of its own.
fn collect(mut pipe: impl Read + Send + 'static, output: Arc<Mutex<String>>) {
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&chunk[..n]).into_owned();
            output
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_str(&text);
        }
    });
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The server's environment for ACME from `pebble` on `port`.
fn acme_vars(
    mock: &MockSpotify,
    pki: &Pki,
    directory_url: &str,
    state: &TempDir,
    port: u16,
) -> Vec<(String, String)> {
    let listen = format!("127.0.0.1:{port}");
    let state = state.path().display().to_string();
    let ca = pki.path("ca.pem");
    server_vars(
        mock,
        &[
            ("LISTEN_ADDR", &listen),
            ("ACME_DOMAINS", DOMAIN),
            ("ACME_DIRECTORY_URL", directory_url),
            ("ACME_CA_FILE", &ca),
            ("ACME_STATE_DIR", &state),
            ("ACME_EMAIL", "admin@example.org"),
            ("METRICS", "on"),
        ],
    )
}

fn start(vars: &[(String, String)]) -> ServerProc {
    let server = ServerProc::start(&support::borrowed(vars));
    assert!(
        server.base_url().starts_with("https://"),
        "{}",
        server.stderr()
    );
    server
}

/// A client that trusts only `root` and asks for [`DOMAIN`] by SNI.
fn client_config(root: &CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).expect("pebble's root is usable");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("default versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// A verified connection to [`DOMAIN`] at `addr`.
fn connect(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> Result<TlsClient, String> {
    let sock =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(DOMAIN).expect("a DNS name");
    let conn =
        rustls::ClientConnection::new(Arc::clone(config), name).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(tls)
}

/// The certificate served to a new verified connection.
fn served(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> Result<CertificateDer<'static>, String> {
    let tls = connect(addr, config)?;
    let certs = tls.conn.peer_certificates().ok_or("no certificate")?;
    Ok(certs[0].clone().into_owned())
}

/// Waits until a verified connection succeeds; the certificate it got.
fn wait_for_certificate(
    server: &ServerProc,
    config: &Arc<rustls::ClientConfig>,
    within: Duration,
) -> CertificateDer<'static> {
    let deadline = Instant::now() + within;
    loop {
        match served(server.addr(), config) {
            Ok(cert) => return cert,
            Err(e) if Instant::now() >= deadline => {
                panic!("no certificate within {within:?}: {e}\n{}", server.stderr())
            }
            Err(_) => thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

#[test]
fn first_certificate_comes_within_a_minute_and_is_served_by_sni() {
    if !pebble_present("first_certificate_comes_within_a_minute_and_is_served_by_sni") {
        return;
    }
    let _turn = heavy();
    let (pki, mock, state, port) = (
        Pki::new(),
        start_mock(),
        TempDir::new("acme-state"),
        free_port(),
    );
    let pebble = Pebble::start(&pki, port, None);
    let started = Instant::now();
    let vars = acme_vars(&mock, &pki, &pebble.directory_url(), &state, port);
    let server = start(&vars);
    let config = client_config(&pebble.root(&pki));
    wait_for_certificate(&server, &config, FIRST_ISSUANCE);
    assert!(started.elapsed() < FIRST_ISSUANCE);
    let mut tls = connect(server.addr(), &config).expect("a verified connection");
    let health = tls_exchange(&mut tls, HEALTH).expect("GET /health over the new certificate");
    assert_eq!(health.status, 200);
    // Outside a validation, a client offering acme-tls/1 gets nothing.
    let mut acme_client = (*config).clone();
    acme_client.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    let refused = served(server.addr(), &Arc::new(acme_client)).expect_err("no challenge now");
    assert!(refused.contains("alert"), "{refused}");
    // The health check pins the stored certificate.
    let healthcheck = run_binary(&["healthcheck"], &support::borrowed(&vars));
    let why = String::from_utf8_lossy(&healthcheck.stderr);
    assert!(healthcheck.status.success(), "{why}");
    let log = server.stderr();
    for line in [
        "registered account",
        "agreeing to its terms",
        "validated",
        "now serving a certificate",
    ] {
        assert!(log.contains(line), "no '{line}' in the log:\n{log}");
    }
    assert!(
        !log.contains("PRIVATE KEY"),
        "key material in the log:\n{log}"
    );
    let metrics = tls_exchange(&mut tls, METRICS).expect("GET /metrics").body;
    let expiry = support::metrics::value(
        &metrics,
        "spotify_token_swap_certificate_expiry_timestamp_seconds",
    );
    assert!(expiry > now_secs() + 86_400.0, "expiry {expiry}");
    assert!(support::metrics::sample(&metrics, "spotify_token_swap_acme_failures_total").is_some());
    // The state directory and every file in it are the owner's only.
    assert_eq!(mode(state.path()), 0o700);
    let folders: Vec<_> = fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(folders.len(), 1, "{folders:?}");
    assert_eq!(mode(&folders[0]), 0o700);
    let files: Vec<_> = fs::read_dir(&folders[0])
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        files.len(),
        3,
        "account key, account URL, certificate: {files:?}"
    );
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[test]
fn renewal_swaps_the_certificate_while_a_keep_alive_connection_stays_open() {
    if !pebble_present("renewal_swaps_the_certificate_while_a_keep_alive_connection_stays_open") {
        return;
    }
    let _turn = heavy();
    let (pki, mock, state, port) = (
        Pki::new(),
        start_mock(),
        TempDir::new("acme-renew"),
        free_port(),
    );
    let pebble = Pebble::start(&pki, port, Some(SHORT_VALIDITY_SECS));
    let server = start(&acme_vars(
        &mock,
        &pki,
        &pebble.directory_url(),
        &state,
        port,
    ));
    let config = client_config(&pebble.root(&pki));
    let first = wait_for_certificate(&server, &config, FIRST_ISSUANCE);
    let mut kept = connect(server.addr(), &config).expect("a verified connection");
    assert_eq!(
        kept.conn.peer_certificates().expect("a certificate")[0],
        first
    );
    // Renewal is due a third of the lifetime before expiry; the kept
    // connection asks something every second, well within the idle limit.
    let deadline = Instant::now() + Duration::from_secs(SHORT_VALIDITY_SECS * 2);
    let renewed = loop {
        let health = tls_exchange(&mut kept, HEALTH).expect("the kept connection still answers");
        assert_eq!(health.status, 200);
        let now = served(server.addr(), &config).expect("a new connection");
        if now != first {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "no renewal:\n{}",
            server.stderr()
        );
        thread::sleep(Duration::from_secs(1));
    };
    let log = server.stderr();
    assert!(log.contains("renewing the certificate"), "{log}");
    assert_eq!(log.matches("now serving a certificate").count(), 2, "{log}");
    // The kept connection goes on, with the certificate it was made with.
    let health = tls_exchange(&mut kept, HEALTH).expect("the kept connection after the swap");
    assert_eq!(health.status, 200);
    assert_eq!(
        kept.conn.peer_certificates().expect("a certificate")[0],
        first
    );
    assert_ne!(renewed, first);
}

#[test]
fn with_the_ca_down_at_start_the_server_retries_says_why_and_serves_once_it_can() {
    if !pebble_present(
        "with_the_ca_down_at_start_the_server_retries_says_why_and_serves_once_it_can",
    ) {
        return;
    }
    let _turn = heavy();
    let (pki, mock, state, port) = (
        Pki::new(),
        start_mock(),
        TempDir::new("acme-down"),
        free_port(),
    );
    let acme_port = free_port();
    let directory_url = format!("https://127.0.0.1:{acme_port}/dir");
    let vars = acme_vars(&mock, &pki, &directory_url, &state, port);
    let server = start(&vars);
    assert!(
        server.wait_for_stderr(
            "ACME: no certificate for sts.example.org: cannot reach",
            Duration::from_secs(10)
        ),
        "no warning saying why:\n{}",
        server.stderr()
    );
    // Until a certificate is issued, handshakes fail cleanly: an alert,
    // and the server goes on.
    let any_root = pki.der("ca.pem");
    let refused = served(server.addr(), &client_config(&any_root)).expect_err("no certificate yet");
    assert!(refused.contains("alert"), "{refused}");
    let healthcheck = run_binary(&["healthcheck"], &support::borrowed(&vars));
    let why = String::from_utf8_lossy(&healthcheck.stderr);
    assert_eq!(healthcheck.status.code(), Some(1), "{why}");
    assert!(why.contains("no certificate from ACME yet"), "{why}");
    let pebble = Pebble::start_on(&pki, port, None, acme_port, None);
    let config = client_config(&pebble.root(&pki));
    // The first retry comes 10 s after the first failure.
    wait_for_certificate(&server, &config, FIRST_ISSUANCE);
    let log = server.stderr();
    assert!(log.contains("now serving a certificate"), "{log}");
    let mut tls = connect(server.addr(), &config).expect("a verified connection");
    let metrics = tls_exchange(&mut tls, METRICS).expect("GET /metrics").body;
    let failures = support::metrics::value(&metrics, "spotify_token_swap_acme_failures_total");
    assert!(failures >= 1.0, "{metrics}");
}

#[test]
fn a_restart_reuses_the_stored_account_and_certificate() {
    if !pebble_present("a_restart_reuses_the_stored_account_and_certificate") {
        return;
    }
    let _turn = heavy();
    let (pki, mock, state, port) = (
        Pki::new(),
        start_mock(),
        TempDir::new("acme-restart"),
        free_port(),
    );
    let pebble = Pebble::start(&pki, port, None);
    let vars = acme_vars(&mock, &pki, &pebble.directory_url(), &state, port);
    let config = client_config(&pebble.root(&pki));
    let mut first = start(&vars);
    let issued = wait_for_certificate(&first, &config, FIRST_ISSUANCE);
    let orders = pebble.output().matches("Issued certificate").count();
    assert_eq!(orders, 1, "pebble's log:\n{}", pebble.output());
    first.signal("TERM");
    assert!(
        first.wait_exit(Duration::from_secs(10)).is_some(),
        "the server did not stop"
    );
    drop(first);
    let again = start(&vars);
    assert_eq!(
        served(again.addr(), &config).expect("served at once"),
        issued
    );
    // Give a new order every chance to happen.
    thread::sleep(Duration::from_secs(2));
    let log = again.stderr();
    assert!(log.contains("serving the stored certificate"), "{log}");
    for line in [
        "made a new account key",
        "registered account",
        "ordered a certificate",
    ] {
        assert!(!log.contains(line), "'{line}' after a restart:\n{log}");
    }
    assert_eq!(
        pebble.output().matches("Issued certificate").count(),
        orders,
        "{}",
        pebble.output()
    );
}

#[test]
fn acme_domains_with_certificate_files_is_a_configuration_error() {
    let mock = start_mock();
    let vars = server_vars(
        &mock,
        &[
            ("ACME_DOMAINS", DOMAIN),
            ("TLS_CERT_FILE", "/nonexistent/cert.pem"),
            ("TLS_KEY_FILE", "/nonexistent/key.pem"),
        ],
    );
    let output = run_binary(&[], &support::borrowed(&vars));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("ACME_DOMAINS is set together with TLS_CERT_FILE/TLS_KEY_FILE"),
        "{stderr}"
    );
}

#[test]
fn check_config_shows_the_acme_settings_and_makes_nothing() {
    let (mock, state) = (start_mock(), TempDir::new("acme-check"));
    let dir = state.path().join("not-yet");
    let dir_text = dir.display().to_string();
    let vars = server_vars(
        &mock,
        &[
            ("ACME_DOMAINS", "Sts.Example.org"),
            ("STATE_DIRECTORY", &dir_text),
        ],
    );
    let output = run_binary(&["check-config"], &support::borrowed(&vars));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "ACME_DOMAINS=sts.example.org (HTTPS on)",
        "ACME_DIRECTORY_URL=https://acme-v02.api.letsencrypt.org/directory",
        &format!("ACME_STATE_DIR={dir_text}"),
    ] {
        assert!(stdout.contains(line), "no '{line}' in:\n{stdout}");
    }
    assert!(!dir.exists(), "check-config made {dir_text}");
}

#[test]
fn a_refused_nonce_is_sent_again_at_once_with_the_new_one() {
    if !pebble_present("a_refused_nonce_is_sent_again_at_once_with_the_new_one") {
        return;
    }
    let _turn = heavy();
    let (pki, mock, state, port) = (
        Pki::new(),
        start_mock(),
        TempDir::new("acme-nonce"),
        free_port(),
    );
    // A third of the nonces refused: about five of the order's fifteen
    // requests are refused at least once; eight refusals in a row (what
    // the client takes) have a chance of 1.5·10⁻⁴ per request.
    let pebble = Pebble::start_on(&pki, port, None, free_port(), Some(33));
    let mut vars = acme_vars(&mock, &pki, &pebble.directory_url(), &state, port);
    vars.push(("LOG_LEVEL".into(), "debug".into()));
    let server = start(&vars);
    wait_for_certificate(&server, &client_config(&pebble.root(&pki)), FIRST_ISSUANCE);
    let log = server.stderr();
    assert!(
        log.contains("refused the nonce (badNonce); sending again"),
        "{log}"
    );
    assert!(
        !log.contains("no certificate for"),
        "a refused nonce failed an attempt:\n{log}"
    );
}
