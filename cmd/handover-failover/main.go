// Command handover-failover is the Lambda function of the standby-failover pattern: a CloudWatch alarm
// (its Lambda action, or EventBridge) or an EC2 state change of a group's primary moves the group's
// Elastic IP to its standby, starting the standby if it is stopped. It runs the same code as
// `handover failover` (failover.Run). Runtime provided.al2023, binary bootstrap (make lambda).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/internal/fail"
)

func main() {
	cfg, err := loadConfig(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "handover-failover: "+err.Error())
		os.Exit(fail.CodeUsage)
	}
	clients, err := cloud.NewClients(context.Background(), os.Getenv, os.Getenv("AWS_REGION"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "handover-failover: "+err.Error())
		os.Exit(fail.CodeFailed)
	}
	log := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: cfg.LogLevel}))
	h := &handler{cfg: cfg, clients: clients, log: log, now: time.Now}
	lambda.Start(h.handle)
}
