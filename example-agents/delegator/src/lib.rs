//! `delegator`: listens to `square-sum` and delegates the arithmetic.
//!
//! `<square-sum><n>3</n><n>4</n></square-sum>` becomes
//! `<calculate>3*3+4*4</calculate>`, which the bus routes to whichever agent
//! listens to `calculate`. The delegator never calls anyone: it only emits.

use agentserver_guest::{export_agent, xml, Agent, Envelope, Failure};

struct Delegator;

impl Agent for Delegator {
    fn handle(msg: Envelope) -> Result<Vec<String>, Failure> {
        let payload = xml::Element::parse(&msg.payload)?;
        let expression = square_sum_expression(&payload)?;
        Ok(vec![xml::ElementBuilder::new("calculate")
            .text(&expression)
            .build()])
    }
}

/// `n1*n1+n2*n2+…` for the `<n>` children; each must be a number.
fn square_sum_expression(payload: &xml::Element<'_>) -> Result<String, Failure> {
    let mut terms = Vec::new();
    for n in payload.children_named("n") {
        let text = n.text();
        let number = text.trim();
        if number.parse::<f64>().map(f64::is_finite) != Ok(true) {
            return Err(Failure::Malformed(format!(
                "<n> must hold a number, not {number:?}"
            )));
        }
        terms.push(format!("{number}*{number}"));
    }
    if terms.is_empty() {
        return Err(Failure::Malformed(
            "square-sum needs at least one <n>NUMBER</n>".into(),
        ));
    }
    Ok(terms.join("+"))
}

export_agent!(Delegator);

#[cfg(test)]
mod tests {
    use super::*;

    fn expression(xml: &str) -> Result<String, Failure> {
        square_sum_expression(&xml::Element::parse(xml).unwrap())
    }

    #[test]
    fn builds_the_sum_of_squares() {
        assert_eq!(
            expression("<square-sum><n>3</n><n> 4 </n></square-sum>").unwrap(),
            "3*3+4*4"
        );
    }

    #[test]
    fn refuses_non_numbers_and_empty_lists() {
        assert!(matches!(
            expression("<square-sum><n>3)+(1</n></square-sum>"),
            Err(Failure::Malformed(_))
        ));
        assert!(matches!(
            expression("<square-sum/>"),
            Err(Failure::Malformed(_))
        ));
    }
}
