//! Fetches a URL through the host's outbound HTTP, as far as its grant
//! allows: `<fetch url="https://…"/>` answers
//! `<fetched status="200" bytes="N">body</fetched>`, or
//! `<fetch-failed url="…">why</fetch-failed>` when the host refuses or the
//! request fails. `times="N"` fetches N times (to meet the request limit);
//! before each request it emits `<fetching url="…" n="i"/>` at once.
//! `header="name: value"` sends one header of the agent's own.

use agentserver_guest::{emit, export_agent, http, xml, Agent, Envelope, Failure};

struct Fetch;

impl Agent for Fetch {
    fn handle(msg: Envelope) -> Result<Vec<String>, Failure> {
        let payload = xml::Element::parse(&msg.payload)?;
        let url = payload
            .attribute("url")
            .ok_or_else(|| Failure::Malformed("<fetch> needs a url attribute".into()))?
            .to_owned();
        let times: u32 = payload
            .attribute("times")
            .map(|t| {
                t.parse()
                    .map_err(|_| Failure::Malformed("times must be a number".into()))
            })
            .transpose()?
            .unwrap_or(1);
        let header = payload.attribute("header").map(|h| {
            let (name, value) = h.split_once(':').unwrap_or((h, ""));
            (name.trim().to_owned(), value.trim().to_owned())
        });
        let headers: Vec<(&str, &str)> = header
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let mut answers = Vec::new();
        for n in 1..=times {
            emit(&format!(
                "<fetching n=\"{n}\" url=\"{}\"></fetching>",
                xml::escape_attribute(&url)
            ));
            match http::request("GET", &url, &headers, None) {
                Ok(response) => {
                    let body = String::from_utf8_lossy(&response.body);
                    answers.push(format!(
                        "<fetched bytes=\"{}\" status=\"{}\">{}</fetched>",
                        response.body.len(),
                        response.status,
                        xml::escape_text(&body)
                    ));
                }
                Err(error) => {
                    answers.push(format!(
                        "<fetch-failed url=\"{}\">{}</fetch-failed>",
                        xml::escape_attribute(&url),
                        xml::escape_text(&error.0)
                    ));
                    break;
                }
            }
        }
        Ok(answers)
    }
}

export_agent!(Fetch);
