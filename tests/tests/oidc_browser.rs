//! The whole single sign-on flow in a real browser: headless Chromium
//! (Debian's `chromium` and `chromium-driver`, installed by
//! `scripts/test.sh`) driven over WebDriver. Myelin's SSO redirect, the
//! provider's login and consent pages, Myelin's username picker and its
//! confirmation page, then the `loginToken` the client is handed logs in.
//!
//! Without Chromium the test is skipped, unless `MYELIN_REQUIRE_BROWSER=1`
//! (set by `scripts/test.sh`), when it fails saying what is missing.

mod oidc_common;

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{ClientBuilder, Locator};
use myelin_tests::{Backend, SERVER_NAME, enc, ok};
use oidc_common::*;

/// `name` on the PATH.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

/// chromedriver, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Chromium and its driver, or why not: a skip, or with
/// `MYELIN_REQUIRE_BROWSER=1` a failure.
async fn browser_or_skip() -> Option<(Driver, PathBuf)> {
    let required = std::env::var("MYELIN_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let missing = |what: &str| {
        let message = format!(
            "{what}: install Debian's `chromium` and `chromium-driver` (scripts/test.sh does)"
        );
        assert!(!required, "MYELIN_REQUIRE_BROWSER=1 but {message}");
        eprintln!("skipping the browser test: {message}");
        None
    };
    let Some(chromium) = which("chromium").or_else(|| which("chromium-browser")) else {
        return missing("no `chromium` on the PATH");
    };
    let Some(chromedriver) = which("chromedriver") else {
        return missing("no `chromedriver` on the PATH");
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = match Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return missing(&format!("{} does not start: {e}", chromedriver.display())),
    };
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = reqwest::get(format!("{}/status", driver.url)).await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return Some((driver, chromium));
        }
        if Instant::now() > deadline {
            return missing("chromedriver did not answer within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_with_the_username_picker_in_chromium() {
    let Some((driver, chromium)) = browser_or_skip().await else {
        return;
    };
    let (server, _idp) = start_with(
        Backend::Sqlite,
        SECRET_CLIENT,
        r#"    user_mapping_provider:
      config:
        localpart_template: "{{ user.preferred_username }}"
        display_name_template: "{{ user.name }}"
        confirm_localpart: true
"#,
        "",
    )
    .await;

    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless", "--no-sandbox", "--disable-gpu",
                     "--disable-background-networking", "--disable-dev-shm-usage"],
        }),
    );
    let connected = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await;
    let browser = match connected {
        Ok(browser) => browser,
        Err(e) => {
            let required = std::env::var("MYELIN_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "MYELIN_REQUIRE_BROWSER=1 but Chromium does not start: {e}"
            );
            eprintln!("skipping the browser test: Chromium does not start: {e}");
            return;
        }
    };
    let result = walk(&browser, &server).await;
    let page = browser.source().await.unwrap_or_default();
    let url = browser.current_url().await.map(|u| u.to_string());
    let _ = browser.close().await;
    if let Err(e) = result {
        panic!(
            "{e}\nat {url:?}\n{page}\n--- server log ---\n{}",
            server.logs()
        );
    }
}

/// The flow, as a user would click through it; `Err` says where it broke.
async fn walk(
    browser: &fantoccini::Client,
    server: &myelin_tests::TestServer,
) -> Result<(), String> {
    let e = |step: &'static str| move |err: fantoccini::error::CmdError| format!("{step}: {err}");
    // The client's redirect URL: a page of Myelin's, so that the browser
    // can load it and its URL can be read.
    let client_url = format!(
        "{}/_matrix/client/versions?client=browser-test",
        server.base_url
    );
    browser
        .goto(&format!(
            "{}{C}/login/sso/redirect?redirectUrl={}",
            server.base_url,
            enc(&client_url)
        ))
        .await
        .map_err(e("open the SSO redirect"))?;

    // The provider's login page.
    let login = browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("input[name=login]"))
        .await
        .map_err(e("the provider's login form"))?;
    login
        .send_keys("browser.user")
        .await
        .map_err(e("type the login"))?;
    browser
        .find(Locator::Css("input[name=password]"))
        .await
        .map_err(e("the password field"))?
        .send_keys("any password")
        .await
        .map_err(e("type the password"))?;
    browser
        .find(Locator::Css("button[type=submit]"))
        .await
        .map_err(e("the sign-in button"))?
        .click()
        .await
        .map_err(e("sign in"))?;

    // The provider's consent page.
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::XPath(
            "//button[@type='submit' and contains(., 'Continue')]",
        ))
        .await
        .map_err(e("the provider's consent page"))?
        .click()
        .await
        .map_err(e("consent"))?;

    // Myelin's username picker: the field found through its label.
    let label = browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::XPath("//label[normalize-space(.)='Username']"))
        .await
        .map_err(e("the username picker's label"))?;
    let field_id = label
        .attr("for")
        .await
        .map_err(e("the label's `for`"))?
        .ok_or("the Username label names no field")?;
    let field = browser
        .find(Locator::Id(&field_id))
        .await
        .map_err(e("the labelled field"))?;
    let suggested = field.prop("value").await.map_err(e("the suggestion"))?;
    if suggested.as_deref() != Some("browser.user") {
        return Err(format!("the picker suggested {suggested:?}"));
    }
    field.clear().await.map_err(e("clear the field"))?;
    field
        .send_keys("picked.in.chromium")
        .await
        .map_err(e("type a username"))?;
    browser
        .find(Locator::XPath("//button[@type='submit']"))
        .await
        .map_err(e("the picker's button"))?
        .click()
        .await
        .map_err(e("submit the username"))?;

    // The confirmation page, then back to the client.
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::LinkText("Continue"))
        .await
        .map_err(e("the confirmation page"))?
        .click()
        .await
        .map_err(e("continue to the client"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let token = loop {
        let url = browser.current_url().await.map_err(e("the client's URL"))?;
        if let Some((_, token)) = url.query_pairs().find(|(k, _)| k == "loginToken") {
            if !url.as_str().starts_with(&client_url) {
                return Err(format!("back at {url}, not the client"));
            }
            break token.into_owned();
        }
        if Instant::now() > deadline {
            return Err(format!("never back at the client; at {url}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let login = ok(token_login(server, &token).await);
    let expected = format!("@picked.in.chromium:{SERVER_NAME}");
    if login["user_id"] != expected.as_str() {
        return Err(format!("logged in as {}, not {expected}", login["user_id"]));
    }
    Ok(())
}
