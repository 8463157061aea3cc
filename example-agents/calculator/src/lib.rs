//! `calculator`: listens to `calculate` and answers `<result>VALUE</result>`.
//!
//! The text of the payload is an arithmetic expression: `+ - * /`,
//! parentheses, unary minus and plus, decimal numbers (`2.5`, `.5`, `1e3`).
//! A bad expression is `failure::malformed` with a message saying where.

mod expression;

use agentserver_guest::{export_agent, xml, Agent, Envelope, Failure};

struct Calculator;

impl Agent for Calculator {
    fn handle(msg: Envelope) -> Result<Vec<String>, Failure> {
        let payload = xml::Element::parse(&msg.payload)?;
        let value = expression::evaluate(&payload.text())
            .map_err(|error| Failure::Malformed(format!("cannot calculate: {error}")))?;
        Ok(vec![xml::ElementBuilder::new("result")
            .text(&expression::format_number(value))
            .build()])
    }
}

export_agent!(Calculator);
