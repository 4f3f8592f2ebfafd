module agentflow.dev/hack/capdrop

go 1.26
