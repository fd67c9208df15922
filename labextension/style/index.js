import './base.css';
import './form.css';
import './backfill.css';
