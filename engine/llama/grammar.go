package llama

import (
	"bytes"
	"encoding/json"
)

// jsonGrammar constrains a reply to one JSON value, written in llama.cpp's
// GBNF. A task's jsonSchema asks for strict output; this guarantees JSON
// syntax (an object when the schema says so) but does not check the
// schema's properties, so a consumer must still validate the fields.
const jsonGrammar = `root   ::= ws TOP ws
value  ::= object | array | string | number | "true" | "false" | "null"
object ::= "{" ws ( member ( ws "," ws member )* )? ws "}"
member ::= string ws ":" ws value
array  ::= "[" ws ( value ( ws "," ws value )* )? ws "]"
string ::= "\"" ( [^"\\\x00-\x1f] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] ) )* "\""
number ::= "-"? ( "0" | [1-9] [0-9]* ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?
ws     ::= ( " " | "\n" | "\t" ){0,8}
`

// grammarFor returns the grammar for a jsonSchema, or "" when there is none.
func grammarFor(schema json.RawMessage) string {
	s := bytes.TrimSpace(schema)
	if len(s) == 0 || string(s) == "null" {
		return ""
	}
	top := "value"
	var head struct {
		Type any `json:"type"`
	}
	if json.Unmarshal(s, &head) == nil {
		switch head.Type {
		case "object":
			top = "object"
		case "array":
			top = "array"
		}
	}
	return string(bytes.Replace([]byte(jsonGrammar), []byte("TOP"), []byte(top), 1))
}
