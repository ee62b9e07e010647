package main

import (
	"fmt"
	"io"
	"strings"
	"text/template"

	"github.com/kelseyhightower/envconfig"
)

// command is what idle-worker's arguments ask for.
type command int

const (
	serve         command = iota // no argument: run the service
	help                         // print the usage and every IDLE_* variable
	printVersion                 // print the version
	printMappings                // print the nats-server subject mappings
)

// parseArgs reads the arguments, without the program's name. The service
// takes none; -h and -version, in their usual spellings, ask for help and
// the version, and mappings for the server's subject mappings.
func parseArgs(args []string) (command, error) {
	if len(args) == 0 {
		return serve, nil
	}
	var c command
	switch args[0] {
	case "-h", "-help", "--help", "help":
		c = help
	case "-version", "--version", "version":
		c = printVersion
	case "mappings":
		c = printMappings
	default:
		return 0, fmt.Errorf("unknown argument %q", args[0])
	}
	if len(args) > 1 {
		return 0, fmt.Errorf("unexpected argument %q after %q", args[1], args[0])
	}
	return c, nil
}

// usageHeader comes before the list of variables.
const usageHeader = `Usage: idle-worker [-h | -version | mappings]

idle-worker decides, over NATS, when backend processes have gone idle and
tells their brokers to drain them. It runs until SIGINT or SIGTERM, and is
configured by the IDLE_* environment variables below only.

idle-worker mappings prints the nats-server configuration block of subject
mappings that routes the heartbeats and state reports of each key under
IDLE_SUBJECT_PREFIX to the key's partition among IDLE_PARTITIONS, and exits.

Exit status: 0 after a clean shutdown, 1 when the service fails, 2 for a bad
configuration or argument.

Environment:
`

// usageVar is the template of one variable in the usage, fed envconfig's
// description of a config field.
const usageVar = `{{range .}}
  {{.Key}} (default: {{or (.Tags.Get "default") "empty"}})
{{range wrap (.Tags.Get "desc")}}        {{.}}
{{end}}{{end}}`

// usageWidth is the width the variables' descriptions are wrapped to.
const usageWidth = 72

// usage writes the usage and every IDLE_* variable, with its default and
// meaning, to w.
func usage(w io.Writer) error {
	tmpl, err := template.New("usage").Funcs(template.FuncMap{"wrap": wrap}).Parse(usageVar)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, usageHeader); err != nil {
		return err
	}
	return envconfig.Usaget(envPrefix, &config{}, w, tmpl)
}

// wrap breaks s into lines of at most usageWidth bytes, between words.
func wrap(s string) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(s) {
		if line != "" && len(line)+1+len(word) > usageWidth {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}
