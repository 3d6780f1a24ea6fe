//! The ksqlDB guard's grammar: the statement kinds a plugin may send, walked token by token.

use super::tokens::Token;
use super::{
    listed, listing, refused, KsqlStatementKind, ALLOWED_FORMATS, ALLOWED_FUNCTIONS, ALLOWED_KINDS,
    ALLOWED_PROPERTIES, CLAUSE_KEYWORDS, DURATION_WORDS, FORBIDDEN_IN_EXPRESSIONS, MAX_PARTITIONS,
    MAX_REPLICAS, PARENTHESIZED_KEYWORDS, RESERVED_NAMES,
};
use crate::access::AccessLevel;
use crate::error::{Error, Result};
use crate::resources::{physical_name, ResourceGrants, ResourceKind};

/// Walks the tokens of one statement, copying them to `output` with names rewritten.
pub(super) struct Guard<'a> {
    plugin: &'a str,
    grants: &'a ResourceGrants,
    tokens: Vec<Token>,
    position: usize,
    output: Vec<Token>,
}

impl<'a> Guard<'a> {
    pub(super) fn new(plugin: &'a str, grants: &'a ResourceGrants, tokens: Vec<Token>) -> Self {
        Guard {
            plugin,
            grants,
            tokens,
            position: 0,
            output: Vec::new(),
        }
    }

    /// The checked tokens, names rewritten.
    pub(super) fn output(&self) -> &[Token] {
        &self.output
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position)
    }

    fn peek_second(&self) -> Option<&Token> {
        self.tokens.get(self.position + 1)
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        self.peek().is_some_and(|token| token.is_keyword(keyword))
    }

    fn is_symbol(&self, symbol: &str) -> bool {
        matches!(self.peek(), Some(Token::Symbol(found)) if *found == symbol)
    }

    /// Moves the current token to the output.
    fn copy(&mut self) {
        if let Some(token) = self.tokens.get(self.position) {
            self.output.push(token.clone());
            self.position += 1;
        }
    }

    fn accept_keyword(&mut self, keyword: &str) -> bool {
        let found = self.is_keyword(keyword);
        if found {
            self.copy();
        }
        found
    }

    fn expect_keyword(&mut self, keyword: &str) -> Result<()> {
        if self.accept_keyword(keyword) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("{keyword} expected")))
        }
    }

    fn accept_symbol(&mut self, symbol: &str) -> bool {
        let found = self.is_symbol(symbol);
        if found {
            self.copy();
        }
        found
    }

    fn expect_symbol(&mut self, symbol: &str) -> Result<()> {
        if self.accept_symbol(symbol) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("'{symbol}' expected")))
        }
    }

    /// A refusal naming the token where the statement left the allowed grammar.
    fn unexpected(&self, expectation: &str) -> Error {
        match self.peek() {
            Some(token) => refused(format!("{expectation}, found '{}'", token.describe())),
            None => refused(format!("{expectation}, found the end of the statement")),
        }
    }

    /// The one optional `;` and then the end; the output always ends with `;`, which ksqlDB's
    /// statement endpoint needs.
    pub(super) fn end(&mut self) -> Result<()> {
        if self.peek().is_none() || self.is_symbol(";") {
            self.position += 1;
            if self.position < self.tokens.len() {
                return Err(refused("only one statement is allowed per call"));
            }
            self.output.push(Token::Symbol(";"));
            return Ok(());
        }
        Err(self.unexpected("the end of the statement expected"))
    }

    pub(super) fn statement(&mut self) -> Result<KsqlStatementKind> {
        let Some(first) = self.peek().and_then(Token::keyword) else {
            return Err(self.unexpected("a statement keyword expected"));
        };
        match first.as_str() {
            "CREATE" => self.create(),
            "INSERT" => self.insert(),
            "DROP" => self.drop(),
            "DESCRIBE" => self.describe(),
            "SELECT" => {
                if self.select()? {
                    return Err(refused(
                        "push queries (EMIT) are not allowed: they run until cancelled; run a \
                         persistent query with CREATE STREAM … AS SELECT and consume its topic",
                    ));
                }
                Ok(KsqlStatementKind::PullQuery)
            }
            other => Err(refused(format!(
                "{other} statements are not allowed; allowed: {ALLOWED_KINDS}"
            ))),
        }
    }

    fn create(&mut self) -> Result<KsqlStatementKind> {
        self.copy();
        if self.accept_keyword("OR") {
            self.expect_keyword("REPLACE")?;
        }
        let is_table = if self.accept_keyword("STREAM") {
            false
        } else if self.accept_keyword("TABLE") {
            true
        } else {
            let what = self.peek().map_or_else(String::new, Token::describe);
            return Err(refused(format!(
                "CREATE {} is not allowed; only CREATE STREAM and CREATE TABLE are",
                what.to_ascii_uppercase()
            )));
        };
        if self.accept_keyword("IF") {
            self.expect_keyword("NOT")?;
            self.expect_keyword("EXISTS")?;
        }
        self.name()?;
        let has_columns = self.is_symbol("(");
        if has_columns {
            self.column_definitions()?;
        }
        let names_topic = self.accept_keyword("WITH") && self.properties()?;
        if !names_topic {
            return Err(refused(
                "CREATE STREAM/TABLE must name one of the plugin's topics in WITH (KAFKA_TOPIC='…')",
            ));
        }
        if has_columns || !self.is_keyword("AS") {
            return Ok(if is_table {
                KsqlStatementKind::CreateTable
            } else {
                KsqlStatementKind::CreateStream
            });
        }
        self.copy();
        self.select()?;
        Ok(if is_table {
            KsqlStatementKind::CreateTableAsSelect
        } else {
            KsqlStatementKind::CreateStreamAsSelect
        })
    }

    fn insert(&mut self) -> Result<KsqlStatementKind> {
        self.copy();
        self.expect_keyword("INTO")?;
        self.name()?;
        if self.accept_symbol("(") {
            loop {
                match self.peek() {
                    Some(Token::Word(_) | Token::Quoted(_)) => self.copy(),
                    _ => return Err(self.unexpected("a column name expected")),
                }
                if !self.accept_symbol(",") {
                    break;
                }
            }
            self.expect_symbol(")")?;
        }
        if self.accept_keyword("VALUES") {
            self.expect_symbol("(")?;
            self.expression()?;
            self.expect_symbol(")")?;
            return Ok(KsqlStatementKind::InsertValues);
        }
        if self.is_keyword("SELECT") {
            self.select()?;
            return Ok(KsqlStatementKind::InsertSelect);
        }
        Err(self.unexpected("VALUES or SELECT expected"))
    }

    fn drop(&mut self) -> Result<KsqlStatementKind> {
        self.copy();
        let kind = if self.accept_keyword("STREAM") {
            KsqlStatementKind::DropStream
        } else if self.accept_keyword("TABLE") {
            KsqlStatementKind::DropTable
        } else {
            return Err(self.unexpected(
                "only DROP STREAM and DROP TABLE are allowed: STREAM or TABLE expected",
            ));
        };
        if self.accept_keyword("IF") {
            self.expect_keyword("EXISTS")?;
        }
        self.name()?;
        if self.is_keyword("DELETE") {
            return Err(refused(
                "DROP … DELETE TOPIC is not allowed: a plugin's topics are created and kept by Warden",
            ));
        }
        Ok(kind)
    }

    fn describe(&mut self) -> Result<KsqlStatementKind> {
        self.copy();
        let leading_extended = self.accept_keyword("EXTENDED");
        self.name()?;
        if !leading_extended {
            self.accept_keyword("EXTENDED");
        }
        Ok(KsqlStatementKind::Describe)
    }

    /// `SELECT … FROM source [JOIN …] [WINDOW …] [WHERE …] [GROUP BY …] [PARTITION BY …]
    /// [HAVING …] [EMIT …] [LIMIT n]`; answers whether it has an `EMIT` clause.
    fn select(&mut self) -> Result<bool> {
        self.expect_keyword("SELECT")?;
        self.expression()?;
        self.expect_keyword("FROM")?;
        self.source()?;
        while self.join()? {}
        if self.accept_keyword("WINDOW") {
            match self.peek().and_then(Token::keyword).as_deref() {
                Some("TUMBLING" | "HOPPING" | "SESSION") => self.copy(),
                _ => return Err(self.unexpected("TUMBLING, HOPPING or SESSION expected")),
            }
            self.expect_symbol("(")?;
            self.duration_until(")")?;
            self.expect_symbol(")")?;
        }
        if self.accept_keyword("WHERE") {
            self.expression()?;
        }
        for clause in ["GROUP", "PARTITION"] {
            if self.accept_keyword(clause) {
                self.expect_keyword("BY")?;
                self.expression()?;
            }
        }
        if self.accept_keyword("HAVING") {
            self.expression()?;
        }
        let emits = self.accept_keyword("EMIT");
        if emits && !self.accept_keyword("CHANGES") && !self.accept_keyword("FINAL") {
            return Err(self.unexpected("CHANGES or FINAL expected"));
        }
        if self.accept_keyword("LIMIT") {
            match self.peek() {
                Some(Token::Number(_)) => self.copy(),
                _ => return Err(self.unexpected("a number expected")),
            }
        }
        Ok(emits)
    }

    /// One `[LEFT|RIGHT|FULL [OUTER]|INNER] JOIN source [WITHIN …] ON …`, if one follows.
    fn join(&mut self) -> Result<bool> {
        if self.accept_keyword("LEFT")
            || self.accept_keyword("RIGHT")
            || self.accept_keyword("FULL")
        {
            self.accept_keyword("OUTER");
        } else if !self.accept_keyword("INNER") && !self.is_keyword("JOIN") {
            return Ok(false);
        }
        self.expect_keyword("JOIN")?;
        self.source()?;
        if self.accept_keyword("WITHIN") {
            self.duration_until("ON")?;
        }
        self.expect_keyword("ON")?;
        self.expression()?;
        Ok(true)
    }

    /// A source after `FROM` or `JOIN`: its name rewritten, and the name the plugin wrote as
    /// its alias unless it gave one.
    fn source(&mut self) -> Result<()> {
        let written = self.name()?;
        if self.accept_keyword("AS") {
            return self.alias();
        }
        let has_alias = match self.peek() {
            Some(Token::Quoted(_)) => true,
            Some(token @ Token::Word(_)) => !token
                .keyword()
                .is_some_and(|keyword| listed(CLAUSE_KEYWORDS, keyword.as_str())),
            _ => false,
        };
        if has_alias {
            return self.alias();
        }
        self.output.push(written);
        Ok(())
    }

    fn alias(&mut self) -> Result<()> {
        match self.peek() {
            Some(Token::Quoted(_)) => self.copy(),
            Some(token @ Token::Word(_)) => {
                let keyword = token.keyword().unwrap_or_default();
                if listed(CLAUSE_KEYWORDS, keyword.as_str())
                    || listed(FORBIDDEN_IN_EXPRESSIONS, keyword.as_str())
                {
                    return Err(self.unexpected("an alias expected"));
                }
                self.copy();
            }
            _ => return Err(self.unexpected("an alias expected")),
        }
        Ok(())
    }

    /// A stream or table name: checked, then written as the backquoted physical name. Answers
    /// the token the plugin wrote.
    fn name(&mut self) -> Result<Token> {
        let Some(written) = self.peek().cloned() else {
            return Err(self.unexpected("a stream or table name expected"));
        };
        // ksqlDB reads an unquoted name in upper case; the guard reads it in lower case, so that
        // it follows the table naming rule, and quotes the physical name to keep it that way.
        let name = match &written {
            Token::Word(word) => {
                let upper = word.to_ascii_uppercase();
                if listed(RESERVED_NAMES, upper.as_str())
                    || listed(CLAUSE_KEYWORDS, upper.as_str())
                    || listed(FORBIDDEN_IN_EXPRESSIONS, upper.as_str())
                {
                    return Err(refused(format!(
                        "'{word}' cannot be a stream or table name here"
                    )));
                }
                word.to_ascii_lowercase()
            }
            Token::Quoted(name) => name.clone(),
            _ => return Err(self.unexpected("a stream or table name expected")),
        };
        let physical = physical_name(ResourceKind::Table, self.plugin, &name).map_err(|error| {
            let reason = match error {
                Error::InvalidName { reason } => reason,
                other => other.to_string(),
            };
            refused(format!(
                "stream or table name '{name}' is not allowed: {reason}"
            ))
        })?;
        self.position += 1;
        self.output.push(Token::Quoted(physical));
        Ok(written)
    }

    /// `(column type [KEY|PRIMARY KEY|HEADERS|HEADER('name')], …)`: names, types and their
    /// parameters only.
    fn column_definitions(&mut self) -> Result<()> {
        let mut closers: Vec<&'static str> = Vec::new();
        loop {
            let Some(token) = self.peek().cloned() else {
                return Err(self.unexpected("')' expected"));
            };
            match &token {
                Token::Symbol("(") => closers.push(")"),
                Token::Symbol("<") => closers.push(">"),
                Token::Symbol(closer @ (")" | ">")) => {
                    if closers.pop() != Some(*closer) {
                        return Err(self.unexpected("balanced brackets expected"));
                    }
                }
                Token::Symbol(",") | Token::Quoted(_) | Token::Number(_) | Token::Text(_) => {}
                Token::Word(_) => {
                    let keyword = token.keyword().unwrap_or_default();
                    let calls = matches!(self.peek_second(), Some(Token::Symbol("(")));
                    if listed(FORBIDDEN_IN_EXPRESSIONS, keyword.as_str())
                        || listed(CLAUSE_KEYWORDS, keyword.as_str())
                        || (calls && !matches!(keyword.as_str(), "DECIMAL" | "HEADER"))
                    {
                        return Err(self.unexpected("a column definition expected"));
                    }
                }
                _ => return Err(self.unexpected("a column definition expected")),
            }
            self.copy();
            if closers.is_empty() {
                return Ok(());
            }
        }
    }

    /// `(KEY = value, …)`; answers whether it named a topic (which it rewrote).
    fn properties(&mut self) -> Result<bool> {
        self.expect_symbol("(")?;
        let mut seen: Vec<String> = Vec::new();
        loop {
            let Some(key) = self.peek().and_then(Token::keyword) else {
                return Err(self.unexpected("a property name expected"));
            };
            if !listed(ALLOWED_PROPERTIES, key.as_str()) {
                return Err(refused(format!(
                    "the property {key} is not allowed; allowed: {}",
                    listing(ALLOWED_PROPERTIES)
                )));
            }
            if seen.contains(&key) {
                return Err(refused(format!("the property {key} is given twice")));
            }
            self.copy();
            self.expect_symbol("=")?;
            self.property_value(&key)?;
            seen.push(key);
            if !self.accept_symbol(",") {
                break;
            }
        }
        self.expect_symbol(")")?;
        Ok(seen.iter().any(|key| key == "KAFKA_TOPIC"))
    }

    fn property_value(&mut self, key: &str) -> Result<()> {
        let value = self.peek().cloned();
        match (key, value) {
            ("KAFKA_TOPIC", Some(Token::Text(topic))) => {
                let grant = self
                    .grants
                    .grant(ResourceKind::Topic, &topic)
                    .ok_or_else(|| Error::TopicAccessDenied {
                        topic: topic.clone(),
                        allowed: self.grants.names(ResourceKind::Topic),
                    })?;
                // A stream both reads and writes its topic, so it needs the topic at `all`.
                grant.require(ResourceKind::Topic, AccessLevel::All)?;
                self.output.push(Token::Text(grant.physical.clone()));
                self.position += 1;
                Ok(())
            }
            ("KEY_FORMAT" | "VALUE_FORMAT" | "FORMAT", Some(Token::Text(format))) => {
                if !listed(ALLOWED_FORMATS, format.to_ascii_uppercase().as_str()) {
                    return Err(refused(format!(
                        "the format '{format}' is not allowed; allowed: {}",
                        listing(ALLOWED_FORMATS)
                    )));
                }
                self.copy();
                Ok(())
            }
            ("PARTITIONS" | "REPLICAS", Some(Token::Number(number))) => {
                let limit = if key == "PARTITIONS" {
                    MAX_PARTITIONS
                } else {
                    MAX_REPLICAS
                };
                match number.parse::<u64>() {
                    Ok(count) if (1..=limit).contains(&count) => {
                        self.copy();
                        Ok(())
                    }
                    _ => Err(refused(format!(
                        "{key} must be a whole number from 1 to {limit}, got {number}"
                    ))),
                }
            }
            ("WRAP_SINGLE_VALUE", Some(token))
                if token.is_keyword("TRUE") || token.is_keyword("FALSE") =>
            {
                self.copy();
                Ok(())
            }
            (
                "TIMESTAMP" | "TIMESTAMP_FORMAT" | "KEY_DELIMITER" | "VALUE_DELIMITER"
                | "WINDOW_TYPE" | "WINDOW_SIZE",
                Some(Token::Text(_)),
            ) => {
                self.copy();
                Ok(())
            }
            _ => Err(self.unexpected(&format!("a value for {key} expected"))),
        }
    }

    /// A duration (`1 HOUR`, `(1 HOUR, 2 HOURS)`, `SIZE 1 HOUR, GRACE PERIOD 1 MINUTE`) up to
    /// the keyword or symbol `until`, at the top level.
    fn duration_until(&mut self, until: &str) -> Result<()> {
        let mut depth = 0usize;
        loop {
            match self.peek() {
                Some(Token::Symbol(")")) if depth == 0 && until == ")" => return Ok(()),
                Some(token) if depth == 0 && token.is_keyword(until) => return Ok(()),
                Some(Token::Symbol("(")) => depth += 1,
                Some(Token::Symbol(")")) if depth > 0 => depth -= 1,
                Some(Token::Number(_) | Token::Symbol(",")) => {}
                Some(token @ Token::Word(_))
                    if listed(DURATION_WORDS, token.keyword().unwrap_or_default().as_str()) => {}
                _ => return Err(self.unexpected("a duration expected")),
            }
            self.copy();
        }
    }

    /// An expression (or a comma-separated list of them) up to a clause keyword, a `;` or an
    /// unmatched closing bracket. Functions must be on the allow-list; sources, statements and
    /// lambdas cannot appear.
    fn expression(&mut self) -> Result<()> {
        let start = self.position;
        let mut closers: Vec<&'static str> = Vec::new();
        while let Some(token) = self.peek() {
            let calls = matches!(self.peek_second(), Some(Token::Symbol("(")));
            match token {
                Token::Symbol(";") => break,
                Token::Symbol("(") => closers.push(")"),
                Token::Symbol("[") => closers.push("]"),
                Token::Symbol(closer @ (")" | "]")) => {
                    if closers.is_empty() {
                        break;
                    }
                    if closers.pop() != Some(*closer) {
                        return Err(self.unexpected("balanced brackets expected"));
                    }
                }
                Token::Symbol("=>") => return Err(refused("lambda expressions are not allowed")),
                Token::Quoted(name) if calls => {
                    return Err(refused(format!(
                        "the quoted function name `{name}` is not allowed"
                    )))
                }
                Token::Word(_) => {
                    let keyword = token.keyword().unwrap_or_default();
                    if listed(CLAUSE_KEYWORDS, keyword.as_str()) {
                        if closers.is_empty() {
                            break;
                        }
                        return Err(refused(format!(
                            "{keyword} is not allowed inside parentheses"
                        )));
                    }
                    if listed(FORBIDDEN_IN_EXPRESSIONS, keyword.as_str()) {
                        return Err(refused(format!(
                            "{keyword} is not allowed in an expression"
                        )));
                    }
                    if calls
                        && !listed(PARENTHESIZED_KEYWORDS, keyword.as_str())
                        && !listed(ALLOWED_FUNCTIONS, keyword.as_str())
                    {
                        return Err(refused(format!(
                            "the function {keyword} is not allowed: only ordinary built-in functions are"
                        )));
                    }
                }
                _ => {}
            }
            self.copy();
        }
        if !closers.is_empty() {
            return Err(self.unexpected("balanced brackets expected"));
        }
        if self.position == start {
            return Err(self.unexpected("an expression expected"));
        }
        Ok(())
    }
}
