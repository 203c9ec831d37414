package simulator

import "testing"

func TestInfluxQLQuoting(t *testing.T) {
	tests := []struct{ in, ident, str string }{
		{`run-1`, `"run-1"`, `'run-1'`},
		{`a"b`, `"a\"b"`, `'a"b'`},
		{`a'b`, `"a'b"`, `'a\'b'`},
		{`a\`, `"a\\"`, `'a\\'`},
		{`x' OR '1'='1`, `"x' OR '1'='1"`, `'x\' OR \'1\'=\'1'`},
		{`\' ; DROP DATABASE "d"`, `"\\' ; DROP DATABASE \"d\""`, `'\\\' ; DROP DATABASE "d"'`},
		{"l1\nl2", `"l1\nl2"`, `'l1\nl2'`},
	}
	for _, tt := range tests {
		if got := quoteIdent(tt.in); got != tt.ident {
			t.Errorf("quoteIdent(%q) = %s, want %s", tt.in, got, tt.ident)
		}
		if got := quoteString(tt.in); got != tt.str {
			t.Errorf("quoteString(%q) = %s, want %s", tt.in, got, tt.str)
		}
	}
	if got, want := where("run-1", 1, 2), `WHERE "sim_run"::tag = 'run-1' AND time >= 1 AND time <= 2`; got != want {
		t.Errorf("where = %s, want %s", got, want)
	}
}
