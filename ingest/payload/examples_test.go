package payload

// Example payloads shared by the tests and the fuzz corpus.
const (
	exampleBatch = `{"seq":18,"readings":[
		{"ts":1763820000,"metrics":{"a":1}},
		{"measurement":"power","device":"meter-2","metrics":{"w":{"value":1234,"type":"int","unit":"W"}},"tags":{"phase":"L1","site":"s"}},
		{"measurement":"","device":"","metrics":{"b":true},"tags":null}
	]}`
	exampleDuplicateKeys = `{"seq":1,"seq":2,"measurement":"a","measurement":"b","metrics":{"x":1},"metrics":{"y":2}}`
	exampleEnvelope      = `{"seq":19,"measurement":"env","senml":[{"bn":"gw-7/","n":"temperature","v":21,"t":1763820000.25}],"other":1}`
	exampleEscapes       = `{"measurement":"m\u00e9t\"o","device":"dev\t1",
		"metrics":{"temp\u00e9rature":"line1\nline2 \u2603 \ud83d\ude00 ☃","a\\b":1,"\/s":"\u0000"},
		"tags":{"k\"ey":"v\/al","日本":"語"}}`
	exampleIntegral = `{"readings":[{"metrics":{"t":21}},{"metrics":{"t":21.5}}]}`
	exampleRejected = `{"seq":3,"readings":[
		{"metrics":{"a":null}},
		{"metrics":{"b":1}},
		{"metrics":{"ok":1,"c":[1]}},
		{"metrics":{"d":1},"tags":{"t":1}},
		{"metrics":{}},
		{"tags":{"x":"y"}},
		5,
		{"metrics":{"e":2},"tags":{"site":"s"},"device":"dev-9"},
		{"metrics":{"f":1,"f":2}},
		{"metrics":{"g":1},"tags":{"t":"1","t":"2"}},
		{"metrics":[1]},
		{"metrics":{"h":1},"tags":[]},
		{"metrics":{"h":1},"measurement":5},
		{"metrics":{"h":1},"device":5},
		{"metrics":{"h":1},"ts":"bad"},
		{"metrics":{"last":"z"}}
	]}`
	exampleSenML = `[
		{"bver":10,"bn":"child-1/","bt":1763820000,"bu":"Cel","n":"temp","v":21.5},
		{"n":"temp","t":10,"v":22},
		{"n":"hum","u":"%RH","v":40},
		{"bn":"child-2/","bv":1,"n":"temp","v":19},
		{"n":"temp","v":2},
		{"bt":1763820100,"bu":"K","bv":0},
		{"n":"temp","v":300},
		{"bn":"","n":"plain","vs":"text"},
		{"bn":"a/b/","n":"c","vb":true},
		{"n":"blob","vd":"aGVsbG8"},
		{"bs":100,"n":"energy","s":5.5,"u":"J"},
		{"n":"energy","s":1}
	]`
	exampleSenMLPoison = `[
		{"bn":"dev-a/","n":"x","v":1},
		{"bn":5,"n":"x","v":2},
		{"n":"y","v":3},
		{"bu":7},
		{"bn":"dev-b/","n":"z","v":4},
		{"n":"z","v":5,"u":"W"},
		{"bv":"x"},
		{"n":"z","vs":"not affected by bv","u":""},
		{"n":"z","v":6},
		{"bv":10},
		{"n":"z","v":6,"u":"W"}
	]`
	exampleSenMLUnknown = `[{"n":"x","v":1,"future":true,"ut":5}]`
	exampleSingle       = `{"seq":17,"ts":1763820000123,"measurement":"environment",
		"metrics":{"temperature":21.4,"humidity":40.1,"door_open":false,"status":"ok"},
		"tags":{"site":"plant-3"},"device":"child-7","future_key":{"x":[1,2]}}`
	exampleTwoReadings = `{"readings":[{"metrics":{"a":1},"tags":{"t":"1"}},{"metrics":{"b":2},"tags":{"u":"2"}}]}`
)
