// compose-check loads docker-compose.yaml the way `docker compose config -q` does (compose-go:
// interpolation, compose-spec schema validation, normalisation, consistency checks) without a
// Docker engine or the compose plugin. Used by `./deploy.sh test` and `./deploy.sh check`.
//
//	go run ./scripts/compose-check [-env-file .env.example] [-profile NAME]... docker-compose.yaml
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type profiles []string

func (p *profiles) String() string     { return strings.Join(*p, ",") }
func (p *profiles) Set(v string) error { *p = append(*p, v); return nil }

func main() {
	envFile := flag.String("env-file", "", "file with the variables the compose file interpolates")
	var wanted profiles
	flag.Var(&wanted, "profile", "profile to enable (repeatable)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: compose-check [-env-file FILE] [-profile NAME]... COMPOSE_FILE")
		os.Exit(2)
	}
	file, err := filepath.Abs(flag.Arg(0))
	if err != nil {
		fail(err)
	}
	opts := []cli.ProjectOptionsFn{
		cli.WithWorkingDirectory(filepath.Dir(file)),
		cli.WithProfiles(wanted),
		cli.WithResolvedPaths(true),
		// Only the given env file: the caller's environment must not hide a missing variable.
		cli.WithInterpolation(true),
	}
	if *envFile != "" {
		opts = append(opts, cli.WithEnvFiles(*envFile), cli.WithDotEnv)
	}
	options, err := cli.NewProjectOptions([]string{file}, opts...)
	if err != nil {
		fail(err)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	fmt.Printf("%s: valid (%d services with profiles %v)\n", flag.Arg(0), len(project.Services), []string(wanted))
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "compose-check: %v\n", err)
	os.Exit(1)
}
