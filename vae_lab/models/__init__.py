"""Model families assembled from nets, posteriors and priors; each yields named log weights."""
