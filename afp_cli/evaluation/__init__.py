"""`afp evaluate`: lm-eval on a base model and its adapters, with afp's task families and a comparison table."""
