//! Remembers through the host's key-value storage:
//! `<remember key="k">text</remember>` stores text in the session's bucket,
//! `<recall key="k"/>` answers `<recalled key="k">text</recalled>` (empty
//! and `missing="true"` when unset), `<tally/>` counts calls across all
//! sessions in the agent's bucket and answers `<tally-is>N</tally-is>` (not
//! `<tally>`, which it listens to). A refused write (past the quota) answers
//! `<memo-failed>why</memo-failed>`.

use agentserver_guest::{export_agent, kv, xml, Agent, Envelope, Failure};

struct Memo;

fn failed(why: &str) -> Vec<String> {
    vec![format!(
        "<memo-failed>{}</memo-failed>",
        xml::escape_text(why)
    )]
}

impl Agent for Memo {
    fn handle(msg: Envelope) -> Result<Vec<String>, Failure> {
        let payload = xml::Element::parse(&msg.payload)?;
        let key = payload.attribute("key").unwrap_or("").to_owned();
        match msg.tag.as_str() {
            "remember" => {
                let bucket = kv::open("session").map_err(Failure::Refused)?;
                Ok(match kv::set(&bucket, &key, payload.text().as_bytes()) {
                    Ok(()) => vec![format!(
                        "<remembered key=\"{}\"></remembered>",
                        xml::escape_attribute(&key)
                    )],
                    Err(why) => failed(&why),
                })
            }
            "recall" => {
                let bucket = kv::open("session").map_err(Failure::Refused)?;
                let value = kv::get(&bucket, &key).map_err(Failure::Internal)?;
                let key = xml::escape_attribute(&key);
                Ok(vec![match value {
                    Some(value) => format!(
                        "<recalled key=\"{key}\">{}</recalled>",
                        xml::escape_text(&String::from_utf8_lossy(&value))
                    ),
                    None => format!("<recalled key=\"{key}\" missing=\"true\"></recalled>"),
                }])
            }
            "tally" => {
                let bucket = kv::open("agent").map_err(Failure::Refused)?;
                Ok(match kv::increment(&bucket, "tally", 1) {
                    Ok(n) => vec![format!("<tally-is>{n}</tally-is>")],
                    Err(why) => failed(&why),
                })
            }
            other => Err(Failure::Malformed(format!("memo does not know <{other}>"))),
        }
    }
}

export_agent!(Memo);
