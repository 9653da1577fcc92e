from batch_mcp.cli import main

raise SystemExit(main())
