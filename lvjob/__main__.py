from lvjob.cli import main

raise SystemExit(main())
