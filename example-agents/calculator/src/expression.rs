//! A recursive-descent evaluator for arithmetic expressions over `f64`.
//!
//! Grammar (the usual precedence, left associative):
//!
//! ```text
//! expr   = term   (('+' | '-') term)*
//! term   = factor (('*' | '/') factor)*
//! factor = ('-' | '+') factor | number | '(' expr ')'
//! ```

use std::fmt;

/// Nesting bound for parentheses and unary signs, so that hostile input
/// cannot overflow the agent's stack.
const MAX_NESTING: usize = 200;

/// Why an expression could not be evaluated.
#[derive(Debug, Clone, PartialEq)]
pub enum ExpressionError {
    /// Nothing but whitespace.
    Empty,
    /// A character that has no place in an expression.
    UnexpectedCharacter { found: char, position: usize },
    /// The expression stopped where an operand was expected.
    UnexpectedEnd,
    /// A `(` without its `)`.
    UnclosedParenthesis { position: usize },
    /// A number that does not parse (`1.2.3`).
    BadNumber { text: String },
    /// Division by zero.
    DivisionByZero,
    /// The result is not a finite number.
    Overflow,
    /// Parentheses or signs nested deeper than the bound.
    TooDeep,
}

impl fmt::Display for ExpressionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpressionError::Empty => write!(f, "the expression is empty"),
            ExpressionError::UnexpectedCharacter { found, position } => {
                write!(f, "unexpected {found:?} at position {position}")
            }
            ExpressionError::UnexpectedEnd => {
                write!(f, "the expression ends where a number was expected")
            }
            ExpressionError::UnclosedParenthesis { position } => {
                write!(f, "the parenthesis at position {position} is never closed")
            }
            ExpressionError::BadNumber { text } => write!(f, "{text:?} is not a number"),
            ExpressionError::DivisionByZero => write!(f, "division by zero"),
            ExpressionError::Overflow => write!(f, "the result is too large"),
            ExpressionError::TooDeep => write!(f, "the expression nests too deeply"),
        }
    }
}

/// Evaluates `input`.
pub fn evaluate(input: &str) -> Result<f64, ExpressionError> {
    let mut parser = Parser {
        chars: input.chars().collect(),
        pos: 0,
        depth: 0,
    };
    parser.skip_whitespace();
    if parser.peek().is_none() {
        return Err(ExpressionError::Empty);
    }
    let value = parser.expr()?;
    parser.skip_whitespace();
    if let Some(found) = parser.peek() {
        return Err(ExpressionError::UnexpectedCharacter {
            found,
            position: parser.pos + 1,
        });
    }
    if !value.is_finite() {
        return Err(ExpressionError::Overflow);
    }
    Ok(value)
}

/// Formats a result: integers without a fractional part, others in the
/// shortest form that reads back to the same number.
pub fn format_number(value: f64) -> String {
    if value == value.trunc() && value.abs() < 1e15 {
        // `-0` reads oddly; integers print without ".0".
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn next_operator(&mut self, operators: &[char]) -> Option<char> {
        self.skip_whitespace();
        let op = self.peek().filter(|c| operators.contains(c))?;
        self.pos += 1;
        Some(op)
    }

    fn expr(&mut self) -> Result<f64, ExpressionError> {
        let mut value = self.term()?;
        while let Some(op) = self.next_operator(&['+', '-']) {
            let rhs = self.term()?;
            value = if op == '+' { value + rhs } else { value - rhs };
        }
        Ok(value)
    }

    fn term(&mut self) -> Result<f64, ExpressionError> {
        let mut value = self.factor()?;
        while let Some(op) = self.next_operator(&['*', '/']) {
            let rhs = self.factor()?;
            value = if op == '*' {
                value * rhs
            } else if rhs == 0.0 {
                return Err(ExpressionError::DivisionByZero);
            } else {
                value / rhs
            };
        }
        Ok(value)
    }

    fn factor(&mut self) -> Result<f64, ExpressionError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(ExpressionError::TooDeep);
        }
        let result = self.factor_inner();
        self.depth -= 1;
        result
    }

    fn factor_inner(&mut self) -> Result<f64, ExpressionError> {
        self.skip_whitespace();
        match self.peek() {
            None => Err(ExpressionError::UnexpectedEnd),
            Some('-') => {
                self.pos += 1;
                Ok(-self.factor()?)
            }
            Some('+') => {
                self.pos += 1;
                self.factor()
            }
            Some('(') => {
                let open = self.pos + 1;
                self.pos += 1;
                let value = self.expr()?;
                self.skip_whitespace();
                if self.peek() != Some(')') {
                    return Err(match self.peek() {
                        None => ExpressionError::UnclosedParenthesis { position: open },
                        Some(found) => ExpressionError::UnexpectedCharacter {
                            found,
                            position: self.pos + 1,
                        },
                    });
                }
                self.pos += 1;
                Ok(value)
            }
            Some(c) if c.is_ascii_digit() || c == '.' => self.number(),
            Some(found) => Err(ExpressionError::UnexpectedCharacter {
                found,
                position: self.pos + 1,
            }),
        }
    }

    fn number(&mut self) -> Result<f64, ExpressionError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.') {
            self.pos += 1;
        }
        // An exponent: `e` or `E`, an optional sign, digits.
        if matches!(self.peek(), Some('e' | 'E')) {
            let mark = self.pos;
            self.pos += 1;
            if matches!(self.peek(), Some('+' | '-')) {
                self.pos += 1;
            }
            if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
            } else {
                self.pos = mark;
            }
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        text.parse()
            .map_err(|_| ExpressionError::BadNumber { text })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(input: &str) -> String {
        format_number(evaluate(input).unwrap())
    }

    #[test]
    fn follows_precedence_and_parentheses() {
        assert_eq!(eval("2 + 3 * 4"), "14");
        assert_eq!(eval("(1 + 2) * 3"), "9");
        assert_eq!(eval("10 - 4 - 3"), "3");
        assert_eq!(eval("8 / 4 / 2"), "1");
        assert_eq!(eval("3*3+4*4"), "25");
    }

    #[test]
    fn handles_unary_signs_and_decimals() {
        assert_eq!(eval("-3*-3"), "9");
        assert_eq!(eval("-(2.5 + .5)"), "-3");
        assert_eq!(eval("+1.5"), "1.5");
        assert_eq!(eval("0.1 + 0.2"), "0.30000000000000004");
        assert_eq!(eval("1e3 / 8"), "125");
        assert_eq!(eval("7 / 2"), "3.5");
    }

    #[test]
    fn says_what_is_wrong() {
        assert_eq!(evaluate("   "), Err(ExpressionError::Empty));
        assert_eq!(evaluate("1 / 0"), Err(ExpressionError::DivisionByZero));
        assert_eq!(evaluate("2 +"), Err(ExpressionError::UnexpectedEnd));
        assert_eq!(
            evaluate("(1 + 2"),
            Err(ExpressionError::UnclosedParenthesis { position: 1 })
        );
        assert_eq!(
            evaluate("2 $ 3"),
            Err(ExpressionError::UnexpectedCharacter {
                found: '$',
                position: 3
            })
        );
        assert!(matches!(
            evaluate("1.2.3"),
            Err(ExpressionError::BadNumber { .. })
        ));
        assert_eq!(evaluate("1e308 * 10"), Err(ExpressionError::Overflow));
        assert_eq!(evaluate(&"-".repeat(10_000)), Err(ExpressionError::TooDeep));
    }
}
