//! A browser, as far as the HTTP-level tests need one: cookies per host, redirects
//! followed, forms found by their action. (The real-browser tests drive Chromium.)

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::http_full;

/// A browser, as far as these flows need one: cookies per host, redirects followed.
#[derive(Debug, Default)]
pub struct Browser {
    cookies: BTreeMap<String, BTreeMap<String, String>>,
}

pub struct Page {
    pub status: u16,
    pub url: String,
    pub body: String,
}

pub fn split_url(url: &str) -> (SocketAddr, String) {
    let rest = url.strip_prefix("http://").unwrap_or_else(|| panic!("not http: {url}"));
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    (host.parse().unwrap_or_else(|e| panic!("{host}: {e}")), path)
}

impl Browser {
    pub fn request(&mut self, method: &str, url: &str, form: Option<&str>) -> Page {
        let mut url = url.to_string();
        let mut method = method.to_string();
        let mut form = form.map(str::to_string);
        for _ in 0..20 {
            let (addr, path) = split_url(&url);
            let host = addr.to_string();
            let cookie: Vec<String> = self
                .cookies
                .get(&host)
                .map(|c| c.iter().map(|(n, v)| format!("{n}={v}")).collect())
                .unwrap_or_default();
            let cookie = cookie.join("; ");
            let mut headers = vec![];
            if !cookie.is_empty() {
                headers.push(("Cookie", cookie.as_str()));
            }
            if form.is_some() {
                headers.push(("Content-Type", "application/x-www-form-urlencoded"));
            }
            let (status, response_headers, body) =
                http_full(addr, &method, &path, &headers, form.as_deref().unwrap_or_default());
            for (name, value) in &response_headers {
                if name == "set-cookie" {
                    let pair = value.split(';').next().unwrap_or_default();
                    if let Some((n, v)) = pair.split_once('=') {
                        let jar = self.cookies.entry(host.clone()).or_default();
                        if v.is_empty() || value.contains("Max-Age=0") || value.contains("expires=Thu, 01 Jan 1970") {
                            jar.remove(n.trim());
                        } else {
                            jar.insert(n.trim().to_string(), v.to_string());
                        }
                    }
                }
            }
            let location = response_headers.iter().find(|(n, _)| n == "location").map(|(_, v)| v.clone());
            match (status, location) {
                (301 | 302 | 303 | 307, Some(to)) => {
                    url = if to.starts_with("http://") { to } else { format!("http://{host}{to}") };
                    if status != 307 {
                        method = "GET".into();
                        form = None;
                    }
                }
                _ => return Page { status, url, body },
            }
        }
        panic!("too many redirects");
    }

    pub fn get(&mut self, url: &str) -> Page {
        self.request("GET", url, None)
    }
}

/// The action of the page's first form whose action contains `part`.
pub fn form_action(html: &str, part: &str) -> String {
    html.match_indices("action=\"")
        .map(|(i, m)| html[i + m.len()..].split('"').next().unwrap_or_default().replace("&amp;", "&"))
        .find(|a| a.contains(part))
        .unwrap_or_else(|| panic!("no form for {part} in {html}"))
}
