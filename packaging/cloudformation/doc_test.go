// Package cloudformation holds the tests of the CloudFormation templates in this directory: no
// production code. The templates are parsed (YAML with the short-form tags !Ref, !Sub, !GetAtt, ...),
// their IAM policies compared with what `handover iam-policy` prints, every handover command, flag,
// HANDOVER_* variable and handover:* tag in them checked against the CLI, the user data run with stand-ins
// for the binary and systemctl, and each template deployed into moto_server with CloudFormation
// CreateStack, with what moto does not model said and checked (moto_test.go).
//
// gopkg.in/yaml.v3 is a test-only dependency: nothing outside these tests imports it, so no binary
// carries it. It parses YAML into nodes that keep the tags, which is what reading !Ref and !Sub needs.
package cloudformation
