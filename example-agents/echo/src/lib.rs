//! `echo`: listens to `echo` and answers `<echoed>` holding the same content.

use agentserver_guest::{export_agent, xml, Agent, Envelope, Failure};

struct Echo;

impl Agent for Echo {
    fn handle(msg: Envelope) -> Result<Vec<String>, Failure> {
        let payload = xml::Element::parse(&msg.payload)?;
        Ok(vec![xml::wrap("echoed", payload.inner_xml())])
    }
}

export_agent!(Echo);
